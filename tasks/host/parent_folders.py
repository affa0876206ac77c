"""The folders above the models and the app: nobody but root and the admin may replace what is in them.

The deploy, as root, makes folders, links and files under `kitty_paths.models_dir` and
`kitty_paths.kitty_root`, and the servers and the stack run what they find there. Whoever can
write a folder on the way to them can rename what is in it and put their own in its place: a
model, the app's checkout, its .env. The manual's paths are under /Users/Shared, which every
local user can write: a user who makes /Users/Shared/Coding before the first converge owns the
place both live in.

So, before anything is planned, every folder above each of them (the folders that exist, as
the host resolves them: links followed) must be writable by root or the admin only, or be
sticky (a user can then remove or rename only what is theirs) and belong to root or the admin,
as /Users/Shared (1777, root) and /tmp do. Otherwise the converge stops, naming the folder, its
owner and its mode. Not covered: ACLs (macOS `chmod +a`) that grant writing to others.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.api.exceptions import DeployError

from tasks.config import KittyConfig
from tasks.host.platform import Platform


@dataclass(frozen=True)
class Folder:
    path: str
    mode: str  # as ls shows it: drwxrwxrwt
    uid: int


# For each path in "$@": its nearest existing folder, resolved (`cd -P`), then each folder up to /.
_CHAINS = (
    'for p in "$@"; do '
    'd=${p%/*}; [ -n "$d" ] || d=/; '
    'while [ ! -d "$d" ]; do d=${d%/*}; [ -n "$d" ] || d=/; done; '
    'c=$(cd -P -- "$d" 2>/dev/null && pwd -P) || { echo "unreadable $p"; continue; }; '
    'echo "path $p"; '
    "while :; do "
    'set -- $(ls -ldn -- "$c"); echo "folder $1 $3 $c"; '
    '[ "$c" = / ] && break; c=${c%/*}; [ -n "$c" ] || c=/; '
    "done; done"
)


class ParentChains(FactBase):
    """{"admin": uid, "chains": {path: [Folder, ...]}}: for each path, every existing folder above it,
    from the nearest (as `cd -P` resolves it) to /. POSIX sh, `ls -ldn` (GNU, BSD and busybox alike)."""

    def command(self, paths: list[str], user: str) -> str:
        return f"echo admin $(id -u {shlex.quote(user)}); set -f -- {shlex.join(paths)}; {_CHAINS}"

    def process(self, output) -> dict:
        admin, chains, current = None, {}, None
        for line in output:
            kind, _, rest = line.partition(" ")
            if kind == "admin" and rest.strip().isdigit():
                admin = int(rest)
            elif kind == "path":
                current = chains.setdefault(rest, [])
            elif kind == "unreadable":
                chains[rest] = None
                current = None
            elif kind == "folder" and current is not None:
                mode, uid, path = (rest.split(" ", 2) + ["", ""])[:3]
                if uid.isdigit():
                    current.append(Folder(path=path, mode=mode[:10], uid=int(uid)))
        return {"admin": admin, "chains": chains}


def problem(folder: Folder, trusted: set[int]) -> str | None:
    """Why another account could replace what is in `folder`, or None."""
    mode = folder.mode
    if len(mode) < 10 or mode[0] != "d":
        return f"is not a folder as ls shows it ({mode})"
    sticky = mode[9] in "tT"
    writable_by_others = mode[5] == "w" or mode[8] == "w"
    if folder.uid not in trusted:
        return (
            f"belongs to uid {folder.uid}, neither root nor the admin (mode {mode}): "
            "its owner can replace what is in it"
        )
    if writable_by_others and not sticky:
        return f"is writable by others and not sticky (mode {mode}): any of them can replace what is in it"
    return None


def findings(answer: dict, named: dict[str, str]) -> list[str]:
    """One line per folder in the way, naming the setting whose path goes through it."""
    admin = answer.get("admin")
    trusted = {0} | ({admin} if admin is not None else set())
    lines = []
    for setting, path in named.items():
        chain = answer.get("chains", {}).get(path, [])
        if chain is None:
            lines.append(f"{setting} ({path}): the folders above it cannot be read")
            continue
        for folder in chain:
            why = problem(folder, trusted)
            if why:
                lines.append(f"{setting} ({path}): {folder.path} {why}")
    return lines


def check(cfg: KittyConfig, plat: Platform, groups) -> None:
    """Refuse, before any operation, a models or app folder whose parents others can write."""
    named = {}
    if "inference" in groups:
        named["kitty_paths.models_dir"] = cfg.paths.models_dir
    if "application" in groups and cfg.stack.enabled:
        named["kitty_paths.kitty_root"] = cfg.paths.kitty_root
    if not named:
        return
    answer = host.get_fact(ParentChains, paths=sorted(set(named.values())), user=plat.user, _sudo=plat.sudo)
    if not answer or answer.get("admin") is None:
        return  # nothing came back (a simulated host without this fact): nothing to judge
    lines = findings(answer, named)
    if lines:
        raise DeployError(
            f"{host.name}: refusing folders that another account could swap out from under the deploy:\n"
            + "\n".join(f"  - {line}" for line in lines)
            + "\n  Make each folder named here root's or the admin's and not writable by others "
            "(or sticky, as /Users/Shared is), or choose paths elsewhere; then converge again"
        )
