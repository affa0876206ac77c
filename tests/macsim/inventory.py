"""The simulated Mac as pyinfra's only host, in the `inference` group only.

The harness sets MACSIM_SSH_PORT, MACSIM_SSH_KEY and MACSIM_SSH_KNOWN_HOSTS. (The project's
inventory.py puts an unset role on @local: it cannot carry one role only.)
"""

import os

inference = [
    (
        "127.0.0.1",
        {
            "ssh_user": "admin",
            "ssh_port": int(os.environ["MACSIM_SSH_PORT"]),
            "ssh_key": os.environ["MACSIM_SSH_KEY"],
            "ssh_known_hosts_file": os.environ["MACSIM_SSH_KNOWN_HOSTS"],
            # As the project's inventory does: the harness wrote the sim Mac's key there.
            "ssh_strict_host_key_checking": "yes",
        },
    )
]
