"""Stop a KITTY host: the manual's shutdown, in its order, and its emergency stop.

pyinfra inventory.py stop.py                        # graceful
pyinfra inventory.py stop.py --data emergency=true  # SIGKILL, no waiting
pyinfra inventory.py stop.py --data role=inference  # one role of a host that carries both

Only what kitty-ops runs, through its supervisor and its compose project. Stopped
programs stay stopped across a reboot until the next deploy.py, which starts them.
"""

from pyinfra import host

from tasks.host import entry
from tasks.runbook import shutdown

# Bad host data fails here, before anything is stopped.
cfg, plat = entry.begin()
emergency = shutdown.emergency(host.data)
roles = shutdown.roles(host.groups, host.data)

# Images service first: no new image requests; the worker finishes the one it is making.
if "application" in roles:
    shutdown.images_service(cfg, plat, emergency)
    # The application stack: containers and volumes kept, so deploy.py recreates nothing.
    shutdown.stack(cfg, plat, emergency)

# The model servers, once nothing in the stack sends them requests.
if "inference" in roles:
    shutdown.model_servers(cfg, plat, emergency)
    # Then the llama.cpp RPC worker, once no server holds part of its model on it.
    shutdown.rpc_worker(cfg, plat, emergency)

# Every KITTY port free and no KITTY process left, or the stop fails naming what is still there.
shutdown.verify(cfg, plat, roles, emergency)
