"""One API key per model server that has an `api_key_file`: made once on the controller, kept 0600 on the host.

A server that listens beyond loopback must have a key (the schema refuses a
`host` beyond loopback without `api_key_file`; tasks/config/placement.py gives one to a
server it binds beyond loopback for an app host elsewhere). The key is generated on the controller the first
time a converge needs it, in `<keys dir>/<server>.key` (mode 0600, in a
folder that git-ignores itself), and reused ever after, so every host that
runs the server and the app that calls it agree. It reaches:

- the server's host: `api_key_file`, mode 0600, owned by the account the
  server runs as, written by operations.secret_file (never in pyinfra's output,
  a plist, a unit or a command line); llama-server reads it with `--api-key-file`.
  The deploy makes and owns one folder for keys, `<opt_dir>/keys` (0700, the
  server's account): a key file anywhere else goes into a folder that must already
  exist, and that folder is never created, chmodded or chowned (a key at
  `/opt/kitty/q4.key` would otherwise hand the service account `/opt/kitty`);
- the application's `.env`: `LLAMACPP_<NAME>_API_KEY` (tasks/app/secrets.py), a secret.

The keys folder is `.kitty-keys` in the directory pyinfra runs in, or
`$KITTY_KEYS_DIR`.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.files import Directory
from pyinfra.operations import files

from tasks.config import KittyConfig, ModelServer, service_env_name
from tasks.engine import operations
from tasks.host import layout
from tasks.host.platform import Platform

KEYS_DIR_ENV = "KITTY_KEYS_DIR"
DEFAULT_KEYS_DIR = ".kitty-keys"


def keys_dir() -> Path:
    return Path(os.environ.get(KEYS_DIR_ENV) or DEFAULT_KEYS_DIR).resolve()


def controller_key(name: str, folder: Path | None = None) -> str:
    """Server `name`'s key, generated on first use (0600 in a 0700 folder that ignores itself in git)."""
    folder = folder or keys_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# API keys of the model servers (tasks/inference/api_keys.py): never in git.\n*\n")
    path = folder / f"{name}.key"
    try:
        # O_EXCL: two parallel hosts (pyinfra runs them in threads) never write two different keys.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    key = path.read_text().strip()
    if not key:
        raise ValueError(f"{path} is empty: delete it and converge again to make a new key")
    return key


def keyed_servers(cfg: KittyConfig) -> dict[str, ModelServer]:
    return {name: srv for name, srv in cfg.enabled_servers().items() if srv.api_key_file}


def env_secrets(cfg: KittyConfig, folder: Path | None = None) -> dict[str, str]:
    """`{"LLAMACPP_Q4_API_KEY": key}` for the application's .env: each keyed server's key,
    wherever it runs (the placement's wiring on an app host, tasks/config/placement.py)."""
    if cfg.wiring is not None:
        keyed = [name for name, wire in cfg.wiring.items() if wire.keyed]
    else:
        keyed = list(keyed_servers(cfg))
    return {f"LLAMACPP_{service_env_name(name)}_API_KEY": controller_key(name, folder) for name in keyed}


@deploy("API keys of the model servers")
def install(cfg: KittyConfig, plat: Platform) -> None:
    """Each keyed server's key at its `api_key_file`, 0600, owned by the account the server runs as."""
    owner = layout.service_user(cfg, plat)
    as_owner = {"_sudo": True, "_sudo_user": owner} if owner != plat.user else {}
    for name, srv in keyed_servers(cfg).items():
        folder = srv.api_key_file.rpartition("/")[0] or "/"
        if folder == layout.keys_dir(cfg):
            files.directory(
                name=f"Folder of server {name}'s API key",
                path=folder,
                user=owner,
                mode="700",
                present=True,
                _sudo=plat.sudo,
            )
        elif not host.get_fact(Directory, path=folder, _sudo=plat.sudo):
            raise DeployError(
                f"{host.name}: kitty_servers.{name}.api_key_file: its folder {folder} does not exist. The deploy "
                f"makes and changes only its own keys folder, {layout.keys_dir(cfg)} (the default): a key elsewhere "
                f"goes into a folder you made, that {owner!r} can write and nobody else can read"
            )
        operations.secret_file(
            name=f"API key of server {name} (mode 0600, contents never shown)",
            content=controller_key(name),
            dest=srv.api_key_file,
            user=owner,
            **as_owner,
        )
