"""Facts of the llama.cpp step: the builds on the host, the upstream ref, the flags a build accepts."""

from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase


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
# A fact that is read goes over the host's fact shell (tasks/engine/fact_shell.py): one SSH
# session for all of them instead of one each.

_CACHE_ATTR = "_kitty_fact_cache"
_IN_FACT_ATTR = "_kitty_in_fact"
