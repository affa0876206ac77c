"""Facts of the model servers step: llama-servers the scripts before kitty-ops left running."""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase


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
