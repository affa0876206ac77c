"""Only the service account step, for the plan tests of tasks.service_account (deploy.py calls it too)."""

from pyinfra import host

from tasks import config, platform, service_account

service_account.ensure(config.load(host.data), platform.detect())
