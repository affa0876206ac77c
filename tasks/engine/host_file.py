"""A small file whose whole content the deploy renders from a template (a rotation config, a scrape-target list).

One fact answers for the file in one round trip (sha256, mode, owner), where
`files.put` asks three times (`File`, `Sha256File`, then the upload check):
on a converged host the operation only reads that one answer and yields
nothing. Templates (templates/*.j2) are the only place that knows each
file's syntax.
"""

from __future__ import annotations

import hashlib
import posixpath
import shlex
from collections.abc import Callable
from io import StringIO

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation

from tasks.engine import templates

MARK = "kitty-file-state"


def render(template: str, **values) -> str:
    return templates.render(template, **values)


class FileState(FactBase[dict]):
    """The host's node name, and `{"sha256": ..., "mode": "644", "user": "root"}` of a regular
    file (None when there is none): `{"hostname": ..., "file": ...}`.

    The node name of a Mac is its LocalHostName (scutil), which the admin sets: `uname -n`
    there changes with the network (DHCP, reverse DNS), and a file made from it (the
    Prometheus targets' host label) would change with every network. Elsewhere `uname -n`."""

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return (
            f": {MARK} {quoted}; scutil --get LocalHostName 2>/dev/null || uname -n; "
            f'f={quoted}; [ -f "$f" ] || exit 0; '
            "st=$(stat -c '%a %U' \"$f\" 2>/dev/null || stat -f '%Lp %Su' \"$f\"); "
            'sum=$( (sha256sum "$f" 2>/dev/null || shasum -a 256 "$f") | cut -d" " -f1); '
            'echo "$sum $st"'
        )

    def process(self, output) -> dict:
        lines = [line.strip() for line in output if line.strip()]
        parts = lines[1].split() if len(lines) > 1 else []
        state = {"sha256": parts[0], "mode": parts[1], "user": parts[2]} if len(parts) == 3 else None
        return {"hostname": lines[0] if lines else "", "file": state}


def folder_command(folder: str, owner: str) -> str:
    """POSIX sh: make `folder` (quoted) and chown every folder it made, none that existed, to `owner`."""
    return (
        f'base={folder}; while [ ! -d "$base" ]; do base=$(dirname "$base"); done; mkdir -p {folder} && '
        f'd={folder}; while [ "$d" != "$base" ]; do chown {owner} "$d" || exit 1; d=$(dirname "$d"); done'
    )


@operation()
def content(path: str, text: str | Callable[[str], str], mode: str = "644", user: str = "root"):
    """`path` holds exactly `text`, with `mode` and owner `user`; its folder is made when missing.

    `text` may be a function of the host's node name (`uname -n`), read in the same round trip.
    """
    # No output at all (a simulated host that knows nothing of it): no file, no name.
    answer = host.get_fact(FileState, path=path) or {"hostname": "", "file": None}
    current = answer["file"]
    if callable(text):
        text = text(answer["hostname"])
    wanted = hashlib.sha256(text.encode()).hexdigest()
    if current == {"sha256": wanted, "mode": mode, "user": user}:
        host.noop(f"{path} is up to date")
        return
    quoted = shlex.quote(path)
    if current is None:
        # Folders it has to make belong to `user`, as the file does: a folder made inside the app
        # checkout must stay writable by the checkout's owner.
        folder, owner = shlex.quote(posixpath.dirname(path)), shlex.quote(user)
        yield StringCommand(folder_command(folder, owner))
    if current is None or current["sha256"] != wanted:
        yield FileUploadCommand(StringIO(text), path)
    if current is None or current["mode"] != mode:
        yield StringCommand(f"chmod {mode} {quoted}")
    if current is None or current["user"] != user:
        yield StringCommand(f"chown {shlex.quote(user)} {quoted}")
