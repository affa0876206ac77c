"""Back up a KITTY host: the manual's backup, encrypted, verified, retained.

pyinfra inventory.py backup.py

Postgres, Redis, the app's .env and the deploy's record, while the stack runs, into
the restic repository of kitty_backup (default: on the host, under the backup folder).
The restic password comes like the other secrets (environment or secrets_file).
"""

from pyinfra import host

from tasks.host import entry
from tasks.runbook import backup

# Bad host data, or no restic password, fails here, before anything runs.
cfg, plat = entry.begin()

if "application" in host.groups and cfg.stack.enabled:
    # Every part staged, listed with its sha256 in a manifest, stored by restic; then retention.
    backup.take(cfg, plat)
    # What was stored, and the snapshot's id.
    backup.report()
