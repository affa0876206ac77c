"""Scripted fact output for launchd jobs and the files they read, for @fake Macs.

Returns dicts to merge into a host's responses (tests/plan/hosts.py) *before*
the generic keys, since the first match wins.
"""

from __future__ import annotations

from hashlib import sha1

from tasks.supervise.launchd import EXIT_MARKER


def job(target: str, *, loaded: bool = True, pid: int | None = 4242, disabled: bool = False) -> dict:
    """`launchctl print <target>` (and print-disabled) for a job loaded or not."""
    job_label = target.rpartition("/")[2]
    if loaded:
        printed = [
            f"{target} = {{",
            "\tactive count = 1",
            f"\tpath = /Library/LaunchDaemons/{job_label}.plist",
            "\ttype = LaunchDaemon",
            f"\tstate = {'running' if pid else 'not running'}",
            "\tprogram = /opt/kitty/current/bin/llama-server",
            *([f"\tpid = {pid}"] if pid else []),
            "\tlast exit code = (never exited)",
            "}",
        ]
        code = 0
    else:
        printed = [f'Could not find service "{job_label}" in domain for system']
        code = 113
    override = [f'\t"{job_label}" => disabled'] if disabled else []
    return {f"launchctl print {target} 2>&1": [*printed, f"{EXIT_MARKER}{code}", *override]}


def file(path: str, content: str | None, *, user: str = "root", group: str = "wheel", mode: str = "rw-r--r--") -> dict:
    """pyinfra's File and Sha1File facts for a file with `content` (None: absent)."""
    if content is None:
        return {f"sha1sum {path} ": "", f"test -L {path} )": ""}
    size = len(content.encode())
    return {
        f"sha1sum {path} ": f"{sha1(content.encode()).hexdigest()}  {path}",
        f"test -L {path} )": f"user={user} group={group} mode=-{mode} atime=0 mtime=0 ctime=0 size={size} '{path}'",
    }


def directory(path: str, *, user: str = "root", group: str = "wheel") -> dict:
    return {f"test -L {path} )": f"user={user} group={group} mode=drwxr-xr-x atime=0 mtime=0 ctime=0 size=64 '{path}'"}
