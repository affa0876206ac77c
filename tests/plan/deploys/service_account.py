"""Only the service account step, for the plan tests of tasks.system.service_account (deploy.py calls it too)."""

from pyinfra import host

from tasks import config
from tasks.host import platform
from tasks.system import service_account

service_account.ensure(config.load(host.data), platform.detect())
