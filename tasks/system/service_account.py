"""The account the model servers and the images service run as (`kitty_paths.service_user`).

Unset, everything runs as the deploying admin and there is nothing to do. Set,
the account is created when missing, on Linux and on macOS, and given what its
programs need: the logs folder writable, the models folder readable. An
account that already exists is used as it is.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server

from tasks.config import KittyConfig
from tasks.host.platform import Platform

# Role accounts live below 500: the login window never lists them. macOS's own
# daemons (_www, _postgres, ...) take most of 200-299; ours is taken from here up.
MACOS_FIRST_ID = 300
MACOS_LAST_ID = 399
# No shell and no password: nobody can log in as it, launchd and sudo can still run as it.
MACOS_SHELL = "/usr/bin/false"
MACOS_HOME = "/var/empty"
LINUX_SHELL = "/usr/sbin/nologin"
REAL_NAME = "KITTY services"


class Account(FactBase[dict | None]):
    """{"uid": 501, "group": "staff"} for an existing account (directory services or /etc/passwd), else None."""

    def command(self, account: str) -> str:
        quoted = shlex.quote(account)
        # `id` asks the system's resolver: dscl on macOS, NSS on Linux.
        return f"id -u {quoted} 2>/dev/null && id -gn {quoted} 2>/dev/null || true"

    def process(self, output) -> dict | None:
        lines = [line.strip() for line in output if line.strip()]
        if len(lines) < 2 or not lines[0].isdigit():
            return None
        return {"uid": int(lines[0]), "group": lines[1]}


class ClosedFolders(FactBase[list]):
    """Folders on the way to each path that the calling user cannot enter; read with `_sudo_user`.

    A path not created yet counts by its nearest existing folder: the deploy
    creates the rest with the usual 0755.
    """

    default = list

    def command(self, paths: list[str]) -> str:
        quoted = " ".join(shlex.quote(path) for path in paths)
        return (
            f"for d in {quoted}; do "
            # Not searchable reads as missing here too, so the walk stops at the closed folder.
            'while [ ! -d "$d" ]; do d=$(dirname "$d"); done; '
            '(cd "$d") 2>/dev/null || echo "$d"; '
            "done"
        )

    def process(self, output) -> list:
        return [line.strip() for line in output if line.strip()]


def macos_create_script(name: str) -> str:
    """POSIX sh, run as root: a hidden role account and its group, with one free id below 500 for both."""
    user, group = f"/Users/{name}", f"/Groups/{name}"
    # dscl and awk from PATH: /usr/bin on macOS, also under sudo.
    dscl = "dscl ."
    return "; ".join(
        [
            "set -e",
            f"gid=$({dscl} -read {group} PrimaryGroupID 2>/dev/null | awk '{{print $2}}' || true)",
            # One id free both as a uid and as a gid.
            f"id=$({{ {dscl} -list /Users UniqueID; {dscl} -list /Groups PrimaryGroupID; }} | awk "
            f"'{{used[$2] = 1}} END {{for (i = {MACOS_FIRST_ID}; i <= {MACOS_LAST_ID}; i++) "
            "if (!(i in used)) { print i; exit } }')",
            f'if [ -z "$id" ]; then echo "no free id in {MACOS_FIRST_ID}-{MACOS_LAST_ID} for {name}" >&2; exit 1; fi',
            # A group left by an interrupted run is reused as it is.
            f'if [ -z "$gid" ]; then gid=$id; {dscl} -create {group} PrimaryGroupID "$gid"; '
            f"{dscl} -create {group} RealName '{REAL_NAME}'; {dscl} -create {group} Password '*'; fi",
            f'{dscl} -create {user} UniqueID "$id"',
            f'{dscl} -create {user} PrimaryGroupID "$gid"',
            f"{dscl} -create {user} UserShell {MACOS_SHELL}",
            f"{dscl} -create {user} NFSHomeDirectory {MACOS_HOME}",
            f"{dscl} -create {user} RealName '{REAL_NAME}'",
            # '*': no password can ever match, so no login; IsHidden keeps it off every account list.
            f"{dscl} -create {user} Password '*'",
            f"{dscl} -create {user} IsHidden 1",
        ]
    )


@operation()
def macos_account(account: str):
    """Create a hidden role account (no password, no login shell) unless it exists."""
    existing = host.get_fact(Account, account=account)
    if existing:
        host.noop(f"account {account} exists (uid {existing['uid']})")
        return
    yield macos_create_script(account)


@deploy("Service account")
def ensure(cfg: KittyConfig, plat: Platform) -> None:
    """The service account, when `kitty_paths.service_user` is set: created if missing, given logs and models."""
    name = cfg.paths.service_user
    if not name:
        return
    existing = host.get_fact(Account, account=name)
    if existing:
        _refuse_closed_paths(cfg, name)
    if plat.is_mac:
        macos_account(name=f"Service account {name} (hidden, no login)", account=name, _sudo=plat.sudo)
    elif not existing:
        # Debian's useradd -r also creates a group of the same name.
        server.user(
            name=f"Service account {name}",
            user=name,
            system=True,
            shell=LINUX_SHELL,
            create_home=False,
            home=cfg.paths.opt_dir,
            # Its home is only a name: pyinfra would otherwise chown opt_dir (the admin's builds) to it.
            ensure_home=False,
            _sudo=plat.sudo,
        )
    group = logs_group(cfg)
    # Its programs write their logs here; the admin keeps owning both folders.
    files.directory(
        name=f"Logs folder writable by {name}", path=cfg.paths.logs_dir, group=group, mode=775, _sudo=plat.sudo
    )
    files.directory(
        name=f"Models folder readable by {name}", path=cfg.paths.models_dir, group=group, mode=755, _sudo=plat.sudo
    )


def logs_group(cfg: KittyConfig) -> str | None:
    """The group of the logs folder that lets the service account write its logs; None without one.

    An account that exists keeps its own primary group; a new one gets a group of its name.
    """
    name = cfg.paths.service_user
    if not name:
        return None
    existing = host.get_fact(Account, account=name)
    return existing["group"] if existing else name


def _refuse_closed_paths(cfg: KittyConfig, name: str) -> None:
    # The folders themselves are opened to the account above; a closed folder on the way
    # to them (a home folder at 0700, say) is the operator's to decide.
    fields = {"kitty_paths.logs_dir": cfg.paths.logs_dir, "kitty_paths.models_dir": cfg.paths.models_dir}
    parents = {field: path.rsplit("/", 1)[0] or "/" for field, path in fields.items()}
    closed = host.get_fact(ClosedFolders, paths=list(parents.values()), _sudo=True, _sudo_user=name)
    if closed:
        blocked = [f"{field} ({fields[field]})" for field, parent in parents.items() if _under_any(parent, closed)]
        raise DeployError(
            f"{host.name}: the service account {name!r} (kitty_paths.service_user) cannot reach "
            f"{' and '.join(blocked) or ', '.join(closed)}: {', '.join(closed)} is closed to it. "
            "Move the folder, or open the folder on its way (chmod o+x), and converge again."
        )


def _under_any(path: str, folders: list[str]) -> bool:
    return any(path == folder or path.startswith(folder.rstrip("/") + "/") for folder in folders)
