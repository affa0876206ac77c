"""Converge a KITTY host. Reads like the operations manual's table of contents.

pyinfra inventory.py deploy.py [--dry]
"""

from pyinfra import host

from tasks import config, llamacpp, models, platform, prerequisites, servers, stack, verify

# Bad host data fails here, before a single operation is planned.
cfg = config.load(host.data)
plat = platform.detect()

prerequisites.install(cfg, plat)

if "inference" in host.groups:
    llamacpp.build(cfg, plat)
    models.download(cfg, plat)
    servers.run(cfg, plat)

if "application" in host.groups:
    stack.up(cfg, plat)

verify.report(cfg, plat)
