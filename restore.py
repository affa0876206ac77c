"""Restore a KITTY host from a backup, refusing before it harms.

pyinfra inventory.py restore.py --data backup=<snapshot id|latest>

The snapshot is verified first (a damaged or incomplete one is refused, the host
untouched); the current state is backed up; then the data goes back in an order
that keeps it, and the stack is started and waited for.
"""

from pyinfra import host

from tasks.host import entry
from tasks.runbook import backup, restore

# Bad host data, a missing snapshot id or no restic password fails here, before anything runs.
cfg, plat = entry.begin()
snapshot = restore.snapshot_id(host.data)

if "application" in host.groups and cfg.stack.enabled:
    # 1. restic check, restore --verify, the manifest's hashes: refused here, or the parts are ready.
    restore.verify(cfg, plat, snapshot)
    # 2. A safety backup of what is there now: the restore is itself undoable.
    backup.take(cfg, plat, safety=True)
    # 3-4. Writers stopped, Postgres, Redis (stopped while its RDB is replaced), .env; all started.
    restore.restore(cfg, plat)
