"""Facts of the models step: each model file's state and stamp, the files in the models folder, the free space."""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase


class ModelFileStates(FactBase[dict]):
    """Per model file (relative to `models_dir`): its size and mtime, and the stamp kitty-ops wrote after hashing it.

    With `full=True` the file is hashed as well (slow: minutes for a 140 GB model),
    to catch corruption that leaves size and mtime alone. `partial`: the bytes of an
    interrupted download waiting in the staging folder (templates/model-fetch.sh).
    """

    default = dict

    def command(self, models_dir: str, files: list[str], full: bool = False) -> str:
        hash_cmd = '$( (sha256sum "$f" 2>/dev/null || shasum -a 256 "$f") | cut -d" " -f1)' if full else "-"
        quoted = " ".join(shlex.quote(name) for name in files)
        return (
            f"cd {shlex.quote(models_dir)} 2>/dev/null || exit 0; "
            f"for rel in {quoted}; do "
            "p=.kitty-staging/$rel.part; part=0; "
            'if [ -f "$p" ]; then part=$(stat -c \'%s\' "$p" 2>/dev/null || stat -f \'%z\' "$p"); fi; '
            'f=$rel; stamp="$(dirname "$rel")/.kitty/$(basename "$rel").stamp"; '
            'if [ -f "$f" ]; then '
            "st=$(stat -c '%s %Y' \"$f\" 2>/dev/null || stat -f '%z %m' \"$f\"); "
            f'echo "$rel|$st|$(cat "$stamp" 2>/dev/null)|{hash_cmd}|$part"; '
            'else echo "$rel||||$part"; fi; '
            "done"
        )

    def process(self, output) -> dict:
        states = {}
        for line in output:
            rel, stat, stamp, actual, partial = (line.split("|") + ["", "", "", ""])[:5]
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
                "partial": int(partial) if partial.strip().isdigit() else 0,
            }
        return states


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
