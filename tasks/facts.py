"""Our own pyinfra facts, for state pyinfra has no fact for."""

from __future__ import annotations

import copy
import re
import shlex

from pyinfra.api import FactBase

from tasks import fact_shell


class CurrentUser(FactBase[str]):
    """The login name the deploy runs as (`$USER` is unset in many non-login sessions)."""

    def command(self) -> str:
        return "id -un"

    def process(self, output) -> str:
        return "".join(output).strip()


class LlamaCppBuilds(FactBase[dict]):
    """The versioned llama.cpp builds under `root`, newest first, which one `current` points at,
    the commit each build recorded in its build.json, and which builds proved they compute here.

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
            # Proven: its llama-server served a completion here (templates/llama-smoke.sh).
            '[ ! -f "$root/builds/$id/smoke.json" ] || echo "proven $id"; '
            "done"
        )

    def process(self, output) -> dict:
        facts: dict = {"current": None, "builds": [], "commits": {}, "proven": set()}
        for line in output:
            kind, _, rest = line.strip().partition(" ")
            if kind == "current":
                facts["current"] = rest or None
            elif kind == "build":
                build_id, state, *commit = rest.split()
                facts["builds"].append((build_id, state == "ok"))
                if commit:
                    facts["commits"][build_id] = commit[0]
            elif kind == "proven":
                facts["proven"].add(rest)
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


class DistInfos(FactBase[list]):
    """The `*.dist-info` folders of the Python packages installed in the virtualenv `venv`
    (`huggingface_hub-2.4.0.dist-info`): what pip itself reads to say what is installed,
    read with `ls` instead of starting pip (`pip list` takes one to two seconds)."""

    default = list

    def command(self, venv: str) -> str:
        return f'for d in {shlex.quote(venv)}/lib/python*/site-packages/*.dist-info; do echo "${{d##*/}}"; done'

    def process(self, output) -> list:
        return sorted(line.strip() for line in output if line.strip().endswith(".dist-info"))


def has_pinned_distribution(dist_infos: list[str], requirement: str) -> bool:
    """Whether `requirement`, when it is exactly `name==version`, is installed (by its dist-info folder).

    Anything else (extras, ranges, a URL) is False: pip decides."""
    found = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!_-]+)\s*", requirement)
    if not found:
        return False
    # Distribution names compare normalised (PEP 503); dist-info folders use `_` for any run of `-_.`.
    name = re.sub(r"[-_.]+", "_", found.group(1)).lower()
    return f"{name}-{found.group(2)}.dist-info".lower() in {d.lower() for d in dist_infos}


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


# --- One read of each fact per converge ---------------------------------------------------
#
# pyinfra 3.10 keeps no fact cache: every `host.get_fact` is one more SSH round trip. Our
# steps read facts while planning (restart decisions, model stamps, `will_change`) and the
# operation reads them again when it runs; facts that several steps need (the llama.cpp
# builds, the upstream ref, the model files' stamps) were read up to three times. That was
# a third of a no-op converge's round trips (93, 59 of them different, on the sandbox).
# Here a host keeps what its facts answered while nothing has been run on it:
#   - while operations are planned nothing runs, so an answer is stored and reused;
#   - at execution, a stored answer is reused until the first command, upload or rsync of an
#     operation runs on that host; then all its answers are dropped and are read again.
# (No step polls a fact: a health wait is a shell loop on the host, templates/wait-healthy.sh.
# A fact read in a loop with nothing run in between would see its first answer each time.)
# So a planned no-op executes against exactly the state it was planned from, and an
# operation that follows a change reads the changed host, as before. The key is the fact,
# its arguments and how it runs (sudo, user, env, shell): the same fact as another user is
# another read.
# A fact that is read goes over the host's fact shell (tasks/fact_shell.py): one SSH
# session for all of them instead of one each.

_CACHE_ATTR = "_kitty_fact_cache"
_IN_FACT_ATTR = "_kitty_in_fact"


def install_fact_cache() -> bool:
    """Make pyinfra remember facts as described above. Idempotent; False where pyinfra's
    internals are not the ones this was written against (then nothing changes: no cache)."""
    try:
        from pyinfra.api import facts as api_facts
        from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS
        from pyinfra.api.host import Host
    except ImportError:
        return False
    original = getattr(api_facts, "_get_fact", None)
    if original is None or not hasattr(api_facts, "_handle_fact_kwargs"):
        return False
    if getattr(original, "_kitty_cached", False):
        return True

    def cached_get_fact(state, host, cls, args=None, kwargs=None, ensure_hosts=None, apply_failed_hosts=True):
        fact_kwargs, global_kwargs = api_facts._handle_fact_kwargs(state, host, cls, args, kwargs)
        how = {key: value for key, value in global_kwargs.items() if key in CONNECTOR_ARGUMENT_KEYS}
        # (getcallargs puts the fact instance itself among the arguments: not part of the key.)
        what = sorted((name, value) for name, value in fact_kwargs.items() if name != "self")
        key = (cls, repr(what), repr(sorted(how.items())))
        cache = host.__dict__.setdefault(_CACHE_ATTR, {})
        if key in cache:
            # A copy: some operations edit the fact they are given (pyinfra's package ensurers).
            return copy.deepcopy(cache[key])
        host.__dict__[_IN_FACT_ATTR] = host.__dict__.get(_IN_FACT_ATTR, 0) + 1
        try:
            value = original(state, host, cls, args, kwargs, ensure_hosts, apply_failed_hosts)
        finally:
            host.__dict__[_IN_FACT_ATTR] -= 1
        cache[key] = copy.deepcopy(value)
        return value

    cached_get_fact._kitty_cached = True  # type: ignore[attr-defined]
    api_facts._get_fact = cached_get_fact

    def forgetting(method):
        def run(self, *args, **kwargs):
            # A fact's own command leaves the host as it was; anything else may change it.
            if not self.__dict__.get(_IN_FACT_ATTR):
                self.__dict__.pop(_CACHE_ATTR, None)
            return method(self, *args, **kwargs)

        return run

    for name in ("run_shell_command", "put_file", "rsync"):
        setattr(Host, name, forgetting(getattr(Host, name)))

    run_in_session = Host.run_shell_command

    def run_shell_command(self, command, *args, **kwargs):
        # A fact's command goes to the host's fact shell (one SSH session for all of them).
        if self.__dict__.get(_IN_FACT_ATTR):
            answered = fact_shell.run_fact_command(self, command, *args, **kwargs)
            if answered is not None:
                return answered
        return run_in_session(self, command, *args, **kwargs)

    Host.run_shell_command = run_shell_command
    return True
