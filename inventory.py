"""Which hosts to converge, and which roles each carries.

Default: this machine (`@local`), with every role. Over SSH:

    KITTY_HOSTS=admin@studio.local pyinfra inventory.py deploy.py

KITTY_HOSTS is a comma separated list of `user@host[:port]`. A host can carry
one role only with KITTY_INFERENCE_HOSTS (llama.cpp, models, model servers)
or KITTY_APP_HOSTS (container runtime and application stack), same syntax;
when set, they replace KITTY_HOSTS for that role. KITTY_SSH_KEY and
KITTY_SSH_KNOWN_HOSTS name the key and known_hosts file to use.
"""

import os


def _target(spec):
    user, _, address = spec.rpartition("@")
    hostname, _, port = address.partition(":")
    if not hostname or (port and not port.isdigit()):
        raise ValueError(f"bad host {spec!r} in KITTY_*HOSTS: expected user@host[:port]")
    data = {"ssh_user": user} if user else {}
    if port:
        data["ssh_port"] = int(port)
    if os.environ.get("KITTY_SSH_KEY"):
        data["ssh_key"] = os.environ["KITTY_SSH_KEY"]
    if os.environ.get("KITTY_SSH_KNOWN_HOSTS"):
        data["ssh_known_hosts_file"] = os.environ["KITTY_SSH_KNOWN_HOSTS"]
    return hostname, data


def _role(variable):
    specs = os.environ.get(variable) or os.environ.get("KITTY_HOSTS") or ""
    hosts = [_target(spec.strip()) for spec in specs.split(",") if spec.strip()]
    return hosts or ["@local"]


inference = _role("KITTY_INFERENCE_HOSTS")
application = _role("KITTY_APP_HOSTS")
