"""Converge a KITTY host. Reads like the operations manual's table of contents.

pyinfra inventory.py deploy.py [--dry]
"""

from pyinfra import host

from tasks.app import images, stack
from tasks.host import entry, parent_folders
from tasks.inference import api_keys, llamacpp, metrics, models, rpc_workers, servers
from tasks.runbook import verify
from tasks.system import firewall, logs, macos, memory_budget, prerequisites, service_account

# Facts read once, over one SSH session. Bad host data fails here, before a single operation is
# planned; so does a bad placement of the servers over the inventory's hosts.
cfg, plat = entry.begin()

# The models and the app live where nobody but root and the admin can swap what is in the folders above.
parent_folders.check(cfg, plat, host.groups)

# Servers that cannot fit in the Mac's GPU memory fail here, before any download or restart.
if "inference" in host.groups:
    memory_budget.check(cfg, plat)

# A fresh Mac: developer tools, Homebrew, power settings, the Metal wired-memory limit.
if plat.is_mac:
    macos.bootstrap(cfg, plat, gpu="inference" in host.groups)

prerequisites.install(cfg, plat)

# The account the model servers and the images service run as, when it is not the admin.
service_account.ensure(cfg, plat)

# Every log in the logs folder rotated by newsyslog / logrotate, without stopping anything.
logs.rotate(cfg, plat)

# A port beyond loopback answers only the hosts that use it (nftables / pf), before any
# server or worker listens there; removed here with the last such server.
firewall.converge(cfg, plat)

if "inference" in host.groups:
    llamacpp.build(cfg, plat)
    models.download(cfg, plat)
    # A server beyond loopback answers only with its key: made once on the controller, 0600 here.
    api_keys.install(cfg, plat)
    # llama.cpp rpc-server (a worker holding part of a split model): before the servers, so
    # pyinfra has every worker accepting connections before any main server (re)starts.
    rpc_workers.run(cfg, plat)
    # Each server restarts when its definition, the build behind `current` or
    # one of its model files differs from what it was started with.
    servers.run(cfg, plat)

# Prometheus's scrape targets, picked up without a restart: an inference host's own servers;
# on an application host of several hosts, every server of every host (the placement's).
if "inference" in host.groups or cfg.scrape is not None:
    metrics.publish(cfg, plat)

if "application" in host.groups:
    stack.up(cfg, plat)
    # After the stack: the images service runs from its checkout and queues in its Redis, and
    # restarts when the checkout moves. Disabled, it is stopped and removed.
    images.run(cfg, plat)

verify.report(cfg, plat)
