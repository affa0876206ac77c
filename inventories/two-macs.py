"""The manual's four servers on two Macs: they need ~217 GiB of GPU memory, one 192 GB Mac wires ~168 GiB.

    pyinfra inventories/two-macs.py deploy.py [--dry]

Mac 1 (studio.local, 192 GB) runs q4, summary and vision (~79 GiB) and the application
stack; Mac 2 (studio2.local) runs f16 (~138 GiB: a 192 GB Mac). Edit the names, users and
addresses for yours; group_data/all.py is used as it is. What the deploy derives from this
(tasks/config/placement.py): f16 listens on Mac 2's kitty_address, not 0.0.0.0, with an API key
made once on this machine (.kitty-keys/, 0600 on Mac 2), and Mac 2's pf lets only Mac 1
(192.168.1.10) reach port 8082 (tasks/system/firewall.py); Mac 1's .env gets
LLAMACPP_F16_HOST=http://192.168.1.20:8082 and LLAMACPP_F16_API_KEY; q4, summary and
vision stay on Mac 1's loopback, reached at host.docker.internal. Moving a server is
moving its name between the two kitty_serves lists.
"""

import os

# As inventory.py: host keys checked strictly (sudo and secrets go to these hosts).
_SSH = {
    "ssh_user": "admin",
    "ssh_known_hosts_file": os.path.expanduser(os.environ.get("KITTY_SSH_KNOWN_HOSTS") or "~/.ssh/known_hosts"),
    "ssh_strict_host_key_checking": "yes",
}
if os.environ.get("KITTY_SSH_KEY"):
    _SSH["ssh_key"] = os.environ["KITTY_SSH_KEY"]

# Mac 1's address too: Mac 2's firewall lets in only the hosts that use f16, by IP (tasks/system/firewall.py).
_MAC1 = ("studio.local", {**_SSH, "kitty_serves": ["q4", "summary", "vision"], "kitty_address": "192.168.1.10"})
# An address, not a .local name: llama-server binds to it, and mDNS may answer with IPv6 first.
_MAC2 = ("studio2.local", {**_SSH, "kitty_serves": ["f16"], "kitty_address": "192.168.1.20"})

inference = [_MAC1, _MAC2]
application = [_MAC1]
