"""Which hosts to converge, and which roles each carries.

Default: this machine (`@local`), with every role. Over SSH:

    KITTY_HOSTS=admin@studio.local pyinfra inventory.py deploy.py

KITTY_HOSTS is a comma separated list of `user@host[:port]`. A host can carry
one role only with KITTY_INFERENCE_HOSTS (llama.cpp, models, model servers)
or KITTY_APP_HOSTS (container runtime and application stack), same syntax;
when set, they replace KITTY_HOSTS for that role. KITTY_SSH_KEY and
KITTY_SSH_KNOWN_HOSTS name the key and known_hosts file to use.

Several inference hosts, each running some of the servers (tasks/config/placement.py):
`user@host[:port]=server+server` sets the host's kitty_serves, e.g.

    KITTY_APP_HOSTS=admin@studio.local \
    KITTY_INFERENCE_HOSTS=admin@studio.local=q4+summary+vision,admin@studio2.local=f16 \
    pyinfra inventory.py deploy.py

The other hosts reach a host at its name (studio2.local) unless
KITTY_HOST_ADDRESSES gives another (kitty_address): `host=address,...`, e.g.
`studio2.local=192.168.1.20`. inventories/two-macs.py is the same as a file.

Host keys are checked strictly (sudo and secrets go to these hosts): a host
whose key is not in the known_hosts file (default ~/.ssh/known_hosts) is
refused. KITTY_ACCEPT_NEW_HOST_KEY=1 accepts a host's key once, printing its
fingerprints to compare with the host's own (`ssh-keygen -lf
/etc/ssh/ssh_host_ed25519_key.pub` on it); a key that changed is never accepted.
"""

import os
import subprocess
import sys
from pathlib import Path


def _known_hosts():
    return os.path.expanduser(os.environ.get("KITTY_SSH_KNOWN_HOSTS") or "~/.ssh/known_hosts")


def _accept_new_key(hostname, port, known_hosts):
    """Add the host's keys to `known_hosts` when it has none for it, printing their fingerprints."""
    name = f"[{hostname}]:{port}" if port and port != 22 else hostname
    if Path(known_hosts).exists():
        found = subprocess.run(["ssh-keygen", "-F", name, "-f", known_hosts], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip():
            return
    scanned = subprocess.run(
        ["ssh-keyscan", "-p", str(port or 22), hostname], capture_output=True, text=True, timeout=30
    ).stdout
    keys = [line for line in scanned.splitlines() if line and not line.startswith("#")]
    if not keys:
        raise ValueError(f"KITTY_ACCEPT_NEW_HOST_KEY: {name} answered with no host key")
    fingerprints = subprocess.run(
        ["ssh-keygen", "-lf", "-"], input="\n".join(keys) + "\n", capture_output=True, text=True
    )
    print(f"kitty-ops: accepting new host keys of {name} into {known_hosts}:", file=sys.stderr)
    for line in fingerprints.stdout.splitlines():
        print(f"  {line}", file=sys.stderr)
    Path(known_hosts).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(os.open(known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a") as file:
        file.write("\n".join(keys) + "\n")


def _addresses():
    """KITTY_HOST_ADDRESSES: `host=address,...` -> {host: address}."""
    found = {}
    for item in (os.environ.get("KITTY_HOST_ADDRESSES") or "").split(","):
        name, sep, address = item.strip().partition("=")
        if not item.strip():
            continue
        if not sep or not name or not address:
            raise ValueError(f"bad item {item!r} in KITTY_HOST_ADDRESSES: expected host=address")
        found[name] = address
    return found


def _target(spec):
    spec, has_servers, servers = spec.partition("=")
    user, _, address = spec.rpartition("@")
    hostname, _, port = address.partition(":")
    if not hostname or (port and not port.isdigit()):
        raise ValueError(f"bad host {spec!r} in KITTY_*HOSTS: expected user@host[:port]")
    data = {"ssh_user": user} if user else {}
    if port:
        data["ssh_port"] = int(port)
    if has_servers:
        # Validated with the whole inventory (tasks/config/placement.py): names, one host per server.
        data["kitty_serves"] = [name for name in servers.split("+") if name]
    if hostname in _addresses():
        data["kitty_address"] = _addresses()[hostname]
    if os.environ.get("KITTY_SSH_KEY"):
        data["ssh_key"] = os.environ["KITTY_SSH_KEY"]
    # Not pyinfra's default (accept-new): a host seen for the first time is refused, not trusted.
    data["ssh_known_hosts_file"] = _known_hosts()
    data["ssh_strict_host_key_checking"] = "yes"
    if os.environ.get("KITTY_ACCEPT_NEW_HOST_KEY") == "1":
        _accept_new_key(hostname, int(port) if port else 22, data["ssh_known_hosts_file"])
    return hostname, data


def _role(variable):
    specs = os.environ.get(variable) or os.environ.get("KITTY_HOSTS") or ""
    hosts = [_target(spec.strip()) for spec in specs.split(",") if spec.strip()]
    return hosts or ["@local"]


inference = _role("KITTY_INFERENCE_HOSTS")
application = _role("KITTY_APP_HOSTS")
