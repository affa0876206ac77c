"""Our own pyinfra facts, for state pyinfra has no fact for."""

from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase


class CurrentUser(FactBase[str]):
    """The login name the deploy runs as (`$USER` is unset in many non-login sessions)."""

    def command(self) -> str:
        return "id -un"

    def process(self, output) -> str:
        return "".join(output).strip()


class LlamaCppBuilds(FactBase[dict]):
    """The versioned llama.cpp builds under `root`, newest first, and which one `current` points at.

    A build counts as good only if its llama-server still runs: a binary deleted
    or damaged by hand is rebuilt.
    """

    default = dict

    def command(self, root: str) -> str:
        return (
            f"root={shlex.quote(root)}; "
            '[ -d "$root/builds" ] || exit 0; '
            'current=$(readlink "$root/current" 2>/dev/null || true); echo "current ${current##*/}"; '
            'for id in $(ls -1t "$root/builds"); do '
            'if "$root/builds/$id/bin/llama-server" --version >/dev/null 2>&1; '
            'then echo "build $id ok"; else echo "build $id broken"; fi; '
            "done"
        )

    def process(self, output) -> dict:
        facts: dict = {"current": None, "builds": []}
        for line in output:
            kind, _, rest = line.strip().partition(" ")
            if kind == "current":
                facts["current"] = rest or None
            elif kind == "build":
                build_id, _, state = rest.partition(" ")
                facts["builds"].append((build_id, state == "ok"))
        return facts


class ModelFileStates(FactBase[dict]):
    """Per model file (relative to `models_dir`): its size and mtime, and the stamp kitty-ops wrote after hashing it.

    With `full=True` the file is hashed as well (slow: minutes for a 140 GB model),
    to catch corruption that leaves size and mtime alone.
    """

    default = dict

    def command(self, models_dir: str, files: list[str], full: bool = False) -> str:
        hash_cmd = '$( (sha256sum "$f" 2>/dev/null || shasum -a 256 "$f") | cut -d" " -f1)' if full else "-"
        quoted = " ".join(shlex.quote(name) for name in files)
        return (
            f"cd {shlex.quote(models_dir)} 2>/dev/null || exit 0; "
            f"for rel in {quoted}; do "
            'f=$rel; stamp="$(dirname "$rel")/.kitty/$(basename "$rel").stamp"; '
            'if [ -f "$f" ]; then '
            "st=$(stat -c '%s %Y' \"$f\" 2>/dev/null || stat -f '%z %m' \"$f\"); "
            f'echo "$rel|$st|$(cat "$stamp" 2>/dev/null)|{hash_cmd}"; '
            'else echo "$rel|||"; fi; '
            "done"
        )

    def process(self, output) -> dict:
        states = {}
        for line in output:
            rel, stat, stamp, actual = (line.split("|") + ["", "", ""])[:4]
            size, _, mtime = stat.partition(" ")
            stamp_parts = stamp.split()
            states[rel] = {
                "exists": bool(stat),
                "size": int(size) if size else None,
                "mtime": int(mtime) if mtime else None,
                "stamp": (
                    {"sha256": stamp_parts[0], "size": int(stamp_parts[1]), "mtime": int(stamp_parts[2])}
                    if len(stamp_parts) == 3
                    else None
                ),
                "sha256": actual if actual not in ("", "-") else None,
            }
        return states


class FreeSpace(FactBase[int]):
    """Bytes free on the volume that holds `path` (or its nearest existing parent)."""

    def command(self, path: str) -> str:
        return (
            f'p={shlex.quote(path)}; while [ ! -d "$p" ]; do p=$(dirname "$p"); done; '
            "df -Pk \"$p\" | awk 'NR == 2 {print $4}'"
        )

    def process(self, output) -> int | None:
        text = "".join(output).strip()
        return int(text) * 1024 if text.isdigit() else None


class ModelDirFiles(FactBase[list]):
    """GGUF files under `models_dir` (outside our staging folder), relative paths."""

    default = list

    def command(self, models_dir: str) -> str:
        return (
            f"cd {shlex.quote(models_dir)} 2>/dev/null || exit 0; "
            "find . -path ./.kitty-staging -prune -o -name '*.gguf' -type f -print | sed 's|^\\./||'"
        )

    def process(self, output) -> list:
        return sorted(line.strip() for line in output if line.strip())


class ListeningPorts(FactBase[dict]):
    """TCP ports in LISTEN state: {port: {"pid": int | None, "command": str | None}}.

    ss on Linux, lsof on macOS (`+c 0`: lsof cuts command names at 9 characters
    otherwise). A socket of another PID namespace shows no process: pid None.
    """

    default = dict

    def command(self) -> str:
        return "if command -v ss >/dev/null 2>&1; then ss -ltnpH; else lsof +c 0 -nP -iTCP -sTCP:LISTEN -Fpcn; fi"

    def process(self, output) -> dict:
        ports: dict = {}
        pid = command = None
        for line in output:
            line = line.strip()
            if line.startswith("LISTEN"):
                columns = line.split()
                port = columns[3].rpartition(":")[2]
                found = re.search(r'users:\(\("([^"]+)",pid=(\d+)', line)
                if port.isdigit():
                    ports.setdefault(
                        int(port),
                        {"pid": int(found.group(2)) if found else None, "command": found.group(1) if found else None},
                    )
            elif line.startswith("p") and line[1:].isdigit():
                pid = int(line[1:])
            elif line.startswith("c"):
                command = line[1:]
            elif line.startswith("n"):
                port = line.rpartition(":")[2]
                if port.isdigit():
                    ports.setdefault(int(port), {"pid": pid, "command": command})
        return ports


class FindUnits(FactBase[list]):
    """Unit files in `directory` whose name starts with `prefix`."""

    default = list

    def command(self, directory: str, prefix: str) -> str:
        return f"cd {shlex.quote(directory)} 2>/dev/null && ls -1 -- {shlex.quote(prefix)}*.service 2>/dev/null || true"

    def process(self, output) -> list:
        return sorted(line.strip() for line in output if line.strip())


class LegacyServerPids(FactBase[list]):
    """PID files of the old start scripts (`<logs_dir>/llamacpp-*.pid`): (file, pid, command of that pid or '')."""

    default = list

    def command(self, logs_dir: str) -> str:
        return (
            f'for f in {shlex.quote(logs_dir)}/llamacpp-*.pid; do [ -f "$f" ] || continue; '
            'pid=$(tr -cd 0-9 <"$f"); echo "$f|$pid|$(ps -p "${pid:-0}" -o command= 2>/dev/null)"; done'
        )

    def process(self, output) -> list:
        found = []
        for line in output:
            pid_file, _, rest = line.partition("|")
            pid, _, command = rest.partition("|")
            if pid.isdigit():
                found.append((pid_file, int(pid), command.strip()))
        return found
