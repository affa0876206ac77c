"""Facts about the whole host that several wings read: who runs the deploy, which ports listen."""

from __future__ import annotations

import re

from pyinfra.api import FactBase


class CurrentUser(FactBase[str]):
    """The login name the deploy runs as (`$USER` is unset in many non-login sessions)."""

    def command(self) -> str:
        return "id -un"

    def process(self, output) -> str:
        return "".join(output).strip()


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
