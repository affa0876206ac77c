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
    """The versioned llama.cpp builds under `root`, newest first, which one `current` points at,
    and the commit each build recorded in its build.json.

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
            'commit=$(sed -n \'s/.*"commit": "\\([0-9a-f]*\\)".*/\\1/p\' "$root/builds/$id/build.json" 2>/dev/null); '
            'if "$root/builds/$id/bin/llama-server" --version >/dev/null 2>&1; '
            'then echo "build $id ok $commit"; else echo "build $id broken $commit"; fi; '
            "done"
        )

    def process(self, output) -> dict:
        facts: dict = {"current": None, "builds": [], "commits": {}}
        for line in output:
            kind, _, rest = line.strip().partition(" ")
            if kind == "current":
                facts["current"] = rest or None
            elif kind == "build":
                build_id, state, *commit = rest.split()
                facts["builds"].append((build_id, state == "ok"))
                if commit:
                    facts["commits"][build_id] = commit[0]
        return facts


class GitRemoteRef(FactBase[dict]):
    """What `ref` names in the git repository at `git_url` now: {"reachable": bool, "commit": sha | None}.

    One read-only `git ls-remote` (a single round trip, no objects fetched):
    the peeled commit of an annotated tag (`refs/tags/REF^{}`), else the tag,
    else the branch, the order in which git itself resolves a name. It is how
    a tag re-pointed upstream is noticed. Unreachable (offline, no git yet on a
    fresh Mac): {"reachable": False, "error": ...}. A local mirror owned by
    another user is trusted as the build script trusts it.
    """

    default = dict

    def command(self, git_url: str, ref: str) -> str:
        return (
            f"git_url={shlex.quote(git_url)}; ref={shlex.quote(ref)}; "
            'git --version >/dev/null 2>&1 || { echo "unreachable git cannot run"; exit 0; }; '
            'case $git_url in file://* | /*) cfg=$(mktemp "${TMPDIR:-/tmp}/kitty-git.XXXXXX") && '
            "printf '[include]\\n\\tpath = ~/.gitconfig\\n[safe]\\n\\tdirectory = %s\\n\\tdirectory = %s/.git\\n' "
            '"${git_url#file://}" "${git_url#file://}" >"$cfg" && '
            "GIT_CONFIG_GLOBAL=$cfg && export GIT_CONFIG_GLOBAL;; esac; "
            # No credential prompt, and give up on a stalled connection (there is no `timeout` on macOS).
            "out=$(GIT_TERMINAL_PROMPT=0 git -c http.lowSpeedLimit=1000 -c http.lowSpeedTime=30 "
            'ls-remote "$git_url" "refs/tags/$ref" "refs/tags/$ref^{}" "refs/heads/$ref" 2>&1); status=$?; '
            '[ -z "${cfg:-}" ] || rm -f "$cfg"; '
            'if [ "$status" -eq 0 ]; then echo reachable; else echo "unreachable exit $status"; fi; '
            'printf "%s\\n" "$out"'
        )

    def process(self, output) -> dict:
        lines = [line.rstrip() for line in output]
        if not lines or not lines[0].startswith("reachable"):
            return {"reachable": False, "error": " ".join(line.strip() for line in lines)[-300:]}
        refs = {}
        for line in lines[1:]:
            sha, _, name = line.partition("\t")
            if re.fullmatch(r"[0-9a-f]{40}", sha):
                refs[name] = sha
        # Only the three asked-for names can be listed: a peeled tag, a tag, a branch.
        for kind in ("^{}", "refs/tags/", "refs/heads/"):
            for name, sha in refs.items():
                if kind in name:
                    return {"reachable": True, "commit": sha}
        return {"reachable": True, "commit": None}


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
            # Regular files only, named as the scripts named them: a name is data, never shell.
            f'for f in {shlex.quote(logs_dir)}/llamacpp-*.pid; do [ -f "$f" ] && [ ! -L "$f" ] || continue; '
            "case ${f##*/} in *[!A-Za-z0-9_.-]*) continue ;; esac; "
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


class LlamaServerFlags(FactBase):
    """The flags the llama-server of one build accepts: a set, or None when the build has no binary.

    Read from `<build>/flags.txt` (one flag a line, written by the build script
    from the binary's own `--help`), or from `--help` itself for a build made
    before builds recorded it. Both parse the same way: on each line that
    starts with `-`, the comma-separated spellings before the value or text.
    """

    def command(self, build_dir: str) -> str:
        d = shlex.quote(build_dir)
        return (
            f"if [ -f {d}/flags.txt ]; then echo kitty-flags; cat {d}/flags.txt; "
            f"elif [ -x {d}/bin/llama-server ]; then echo kitty-flags; {d}/bin/llama-server --help 2>&1; fi; true"
        )

    def process(self, output) -> set[str] | None:
        lines = list(output)
        if not lines or lines[0].strip() != "kitty-flags":
            return None
        # Nothing parsed (a binary whose --help says nothing useful): unknown, not "no flags".
        return flags_from_help(lines[1:]) or None


def flags_from_help(lines) -> set[str]:
    """`-c`, `--ctx-size`, ... from llama-server's --help (or a flags.txt, which parses the same)."""
    flags = set()
    for line in lines:
        if not line.startswith("-"):
            continue
        for word in line.split():
            more = word.endswith(",")
            word = word.rstrip(",")
            if re.fullmatch(r"--?[A-Za-z0-9][A-Za-z0-9_.-]*", word):
                flags.add(word)
            if not more:
                break
    return flags
