"""The manual's troubleshooting chapter as one read-only command.

pyinfra inventory.py diagnose.py [--data diagnose_bundle=reports/support/kitty-support.tar.gz]

Prints every finding with the manual's remedy; changes nothing on the host. With diagnose_bundle, also
writes a support bundle on the controller: the findings and log tails, every secret value redacted,
0600 in a folder only its owner can enter (made 0700 when missing; one open to others is refused).
"""

from pyinfra import host

from tasks.host import entry
from tasks.runbook import diagnose

# What this host runs, as deploy.py sees it: a server placed on another host is not enabled here.
cfg, plat = entry.begin()

diagnose.run(cfg, plat, bundle_to=host.data.get("diagnose_bundle"))
