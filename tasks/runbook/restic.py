"""The restic repository of backup.py and restore.py: where it is, its password, how a script runs against it.

    <backup folder>/            0700 (kitty_backup.folder, default <opt_dir>/backup)
        restic-password         0600, written by operations.secret_file: never in output
        cache/                  restic's cache
        staging/                one backup's parts while it is taken (removed on exit)
        restore/                one snapshot's parts while it is verified and restored
        repo/                   the repository, unless kitty_backup.repository names another

The password comes from this host's own secret, <kitty_backup.password_secret>_<HOST>, or
(for a repository on the host itself, or with kitty_backup.shared_password) the plain
one, through the same path as the .env's secrets (the operator's environment, else
secrets_file), and reaches restic only as RESTIC_PASSWORD_FILE: never a command line, a
fact or a log. One password per host: see password_secrets.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, StringCommand
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files

from tasks.app import secrets
from tasks.config import KittyConfig
from tasks.engine import operations, templates
from tasks.host import layout
from tasks.host.platform import Platform

TAG = "kitty-ops"
# What backup.py writes, and what `--data backup=latest` means: not the safety snapshot a
# restore takes first (else a second `restore latest` would undo the first one).
BACKUP_TAG = f"{TAG},backup"
SAFETY_TAG = f"{TAG},safety"


def repository(cfg: KittyConfig) -> str:
    return cfg.backup.repository or f"{layout.backup_dir(cfg)}/repo"


def password_file(cfg: KittyConfig) -> str:
    return f"{layout.backup_dir(cfg)}/restic-password"


def environment(cfg: KittyConfig) -> dict[str, str]:
    """restic's settings: paths only, nothing secret."""
    return {
        "RESTIC_REPOSITORY": repository(cfg),
        "RESTIC_PASSWORD_FILE": password_file(cfg),
        "RESTIC_CACHE_DIR": f"{layout.backup_dir(cfg)}/cache",
        "BACKUP_HOST": backup_host(),
    }


def backup_host() -> str:
    """The name this host's snapshots are kept under (restic --host): its inventory name.

    Never `hostname`: a Mac's changes with its network (DHCP, reverse DNS), and then
    `forget` no longer prunes the older snapshots and restore's `latest` finds none.
    `@local` names no host: the script takes the Mac's LocalHostName (scutil), which the
    admin sets and the network does not change, else `hostname` (Linux).
    """
    try:
        name = host.name
    except AttributeError:  # outside a host's context (a plan's helpers): the script decides
        return ""
    return "" if name == "@local" else name


def keep_flags(cfg: KittyConfig) -> str:
    b = cfg.backup
    return (
        f"--keep-last {b.keep_last} --keep-daily {b.keep_daily} "
        f"--keep-weekly {b.keep_weekly} --keep-monthly {b.keep_monthly}"
    )


def host_secret(cfg: KittyConfig, host_name: str) -> str:
    """This host's own password secret: <password_secret>_<HOST> (studio2.local: _STUDIO2_LOCAL)."""
    suffix = re.sub(r"[^A-Za-z0-9]+", "_", host_name).strip("_").upper()
    return f"{cfg.backup.password_secret}_{suffix}" if suffix else cfg.backup.password_secret


def on_the_host(cfg: KittyConfig) -> bool:
    """The repository is a folder of the host itself (the default): no other host writes into it."""
    return cfg.backup.repository is None or cfg.backup.repository.startswith("/")


def password_secrets(cfg: KittyConfig, host_name: str) -> list[str]:
    """The secret names this host may take its password from, its own first.

    One repository password per host is the safe setup: a restic password opens its whole
    repository, and whoever can write a snapshot there can hand any host that restores it
    any file. So a repository outside the host (sftp:, s3:, rest:, ...) takes only this
    host's own secret, unless kitty_backup.shared_password says otherwise; a repository on
    the host itself (the default) may also use the plain one: no other host reaches it.
    """
    own = host_secret(cfg, host_name)
    if own == cfg.backup.password_secret or (not on_the_host(cfg) and not cfg.backup.shared_password):
        return [own]
    return [own, cfg.backup.password_secret]


def _secret(name: str, cfg: KittyConfig) -> str | None:
    value = os.environ.get(name)
    if not value and cfg.stack.secrets_file:
        path = Path(cfg.stack.secrets_file)
        path = path if path.is_absolute() else Path.cwd() / path
        if path.exists():
            value = secrets.parse_dotenv(path.read_text(), str(path)).get(name)
    return value or None


def password(cfg: KittyConfig) -> str:
    """The restic password, read on the controller; a missing one fails before anything runs."""
    names = password_secrets(cfg, host.name)
    for name in names:
        value = _secret(name, cfg)
        if value:
            return value
    why = (
        f" (the repository {cfg.backup.repository} is not on this host: it takes this host's own password, "
        "one per host, unless kitty_backup.shared_password is true)"
        if len(names) == 1 and names[0] != cfg.backup.password_secret
        else ""
    )
    raise DeployError(
        f"{host.name}: no restic password: set {' or '.join(names)} in the environment or in "
        f"kitty_stack.secrets_file (kitty_backup.password_secret){why}"
    )


def prepare(cfg: KittyConfig, plat: Platform) -> None:
    """The backup folder (0700) and the password file (0600): the same on every run once made."""
    files.directory(
        name="Backup folder (0700)", path=layout.backup_dir(cfg), user=plat.user, mode="700", _sudo=plat.sudo
    )
    operations.secret_file(
        name="restic password file (mode 0600, contents never shown)",
        content=password(cfg),
        dest=password_file(cfg),
        user=plat.user,
    )


def script_command(env: dict[str, str]) -> StringCommand:
    """`env NAME=value ... sh -s`: the script comes on stdin; nothing here is secret."""
    assigned = " ".join(shlex.quote(f"{name}={value}") for name, value in sorted(env.items()))
    return StringCommand(f"env {assigned} sh -s 2>&1")


# Put ahead of the scripts that talk to the S3 store: its client setup, written once.
S3_CLIENT = "backup-s3-client.sh"


def script(name: str) -> str:
    """The host script templates/<name>, as sent on stdin, with the S3 client setup where it needs it."""
    text = templates.path(name).read_text()
    if name in ("backup-take.sh", "backup-restore.sh"):
        text = templates.path(S3_CLIENT).read_text() + text
    return text


def run_script(state, host, name: str, env: dict[str, str], outcome: dict, **arguments) -> bool:
    """FunctionCommand target: run templates/<name> with its progress shown as it comes.

    Its `row<TAB>what<TAB>result`, `bad<TAB>why` and `id<TAB>snapshot` lines are collected
    into `outcome` ("rows", "bad", "id") for the table the deploy ends with.
    """
    # The operation's connector arguments first (the run's sudo password), then this step's own.
    arguments = operations.connector_arguments(host, **arguments, _stdin=script(name))
    ok, output = host.run_shell_command(script_command(env), print_output=True, **arguments)
    for line in output.stdout_lines + output.stderr_lines:
        kind, _, rest = line.partition("\t")
        if kind == "row":
            what, _, result = rest.partition("\t")
            outcome.setdefault("rows", []).append((what, result))
        elif kind == "bad":
            outcome.setdefault("bad", []).append(rest)
        elif kind == "id":
            outcome["id"] = rest.strip()
    outcome["ok"] = ok
    return ok


def script_step(name: str, env: dict[str, str], outcome: dict, arguments: dict) -> FunctionCommand:
    return FunctionCommand(run_script, (name, env, outcome), arguments)


def render(title: str, rows: list[tuple[str, str]]) -> list[str]:
    table = [("what", title), *rows]
    width = max(len(what) for what, _ in table)
    return [f"{what:<{width}}  {result}".rstrip() for what, result in table]


def log_table(title: str, rows: list[tuple[str, str]]) -> None:
    for line in render(title, rows):
        host.log(line, logger.info)
