"""Copies of the model servers' keys for Prometheus on an application host: 0600, its account's only.

A keyed server answers /metrics only with its key (llama-server's --api-key-file). The
scrape job of such a server (tasks/inference/metrics.py) sends it with Prometheus's
`authorization.credentials_file`, a file Prometheus rereads at every scrape: here, one
copy per keyed target at `<kitty_metrics.keys_dir>/<server>.key` (default
`<opt_dir>/prometheus-keys`), in a 0700 folder owned by kitty_metrics.prometheus_user
(default: the account that owns the app checkout), written by operations.secret_file
(contents never in pyinfra's output, a command line or a temporary file elsewhere).
The key is the controller's (tasks/inference/api_keys.py), the one the server and the app use.
A copy whose server is no longer a keyed target here (moved to loopback, removed,
disabled) is deleted at the next converge.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import FindFiles
from pyinfra.operations import files

from tasks.config import KittyConfig
from tasks.engine import operations
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.inference import api_keys


def key_path(cfg: KittyConfig, server: str) -> str:
    return f"{layout.prometheus_keys_dir(cfg)}/{server}.key"


def prometheus_user(cfg: KittyConfig, plat: Platform) -> str:
    return cfg.metrics.prometheus_user or layout.service_user(cfg, plat)


@deploy("Prometheus's keys")
def install(cfg: KittyConfig, plat: Platform, keyed: Iterable[str]) -> None:
    """A copy of each of `keyed`'s keys for Prometheus; stale copies removed."""
    keyed = sorted(keyed)
    owner = prometheus_user(cfg, plat)
    # Every step in the folder runs as its owner: root never follows a link planted there.
    as_owner = {"_sudo": True, "_sudo_user": owner} if owner != plat.user else {}
    if keyed:
        files.directory(
            name="Folder of Prometheus's copies of the servers' keys",
            path=layout.prometheus_keys_dir(cfg),
            user=owner,
            mode="700",
            present=True,
            _sudo=plat.sudo,
        )
    for server in keyed:
        operations.secret_file(
            name=f"Prometheus's copy of server {server}'s API key (mode 0600, contents never shown)",
            content=api_keys.controller_key(server),
            dest=key_path(cfg, server),
            user=owner,
            **as_owner,
        )
    wanted = {key_path(cfg, server) for server in keyed}
    # Listed and removed as root: the folder is its owner's only, and that owner may be the one
    # kitty_metrics.prometheus_user named before. `rm` removes a planted link, never its target.
    found = host.get_fact(FindFiles, path=layout.prometheus_keys_dir(cfg), maxdepth=1, fname="*.key", _sudo=plat.sudo)
    for path in sorted(set(found or ()) - wanted):
        server = path.rpartition("/")[2].removesuffix(".key")
        files.file(
            name=f"Remove Prometheus's copy of server {server}'s API key (not scraped with it here now)",
            path=path,
            present=False,
            _sudo=plat.sudo,
        )
