"""Waiting for (re)started programs to serve, and putting back what ran before when one does not.

The loop is templates/wait-healthy.sh (POSIX sh: macOS runs it with bash 3.2
in POSIX mode). It runs ON the host, so programs that listen only on the
host's loopback are reachable even from a laptop's deploy. It polls every
program at once, prints each change of state, and asks each program's
supervisor (its CHECK: systemd's state, `launchctl print`) whether it died,
so a server that exits while starting fails within a second or two, with
its exit status and the tail of its log, not at its health timeout.

When a program this converge (re)started does not serve, the wait rolls it
back (tasks/supervise: its previous plist or unit and record, and `current`
when the build moved, with every program that moved with it), restarts it,
waits for it, and then fails the converge saying what was tried, why it
failed, and that the previous configuration serves again. A first install
has nothing to go back to, and says so.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from pyinfra import logger
from pyinfra.api import FunctionCommand, StringCommand, operation
from pyinfra.operations import files

from tasks import supervise
from tasks.config import KittyConfig
from tasks.engine import templates
from tasks.engine.operations import connector_arguments
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.supervise import Decision, Program, offload
from tasks.supervise.decide import restore_links

WAIT_SCRIPT = templates.path("wait-healthy.sh")
FAILED_LINE = re.compile(r"^\[health\] (.+?): FAILED, (.*?)\. Last lines of ")
DEGRADED_LINE = re.compile(r"^\[health\] (.+?): DEGRADED, (.*)$")


@dataclass(frozen=True)
class Attempt:
    """One program this converge (re)starts: how to wait for it, and how to put back what it ran before."""

    name: str
    # NAME|URL|TIMEOUT_S|LOG|EXPECT, and the CHECK that reads its supervisor (wait-healthy.sh's last field).
    spec: str
    check: str
    # "reload (ctx_size 2048 → 4096)"
    tried: str
    # Commands that restore its previous definition and record and restart it; None: nothing to go back to.
    undo: tuple[str, ...] | None
    # Commands that point shared links (`current`) back; the programs that share them go back together.
    links: tuple[str, ...] = ()
    # Why there is nothing to go back to.
    no_undo: str = ""
    # What to do when it serves from the CPU although it asks for GPU layers (tasks/supervise/offload.py).
    on_cpu: str = ""

    @property
    def argument(self) -> str:
        return f"{self.spec}|{self.check}"


def wait(cfg: KittyConfig, plat: Platform, programs: list[Program], decisions: list[Decision], what: str) -> None:
    """Plan one wait for the programs this converge (re)starts; nothing when none does."""
    starting = {d.name: d for d in decisions if d.starts}
    waiting = [p for p in programs if p.name in starting and p.health]
    if not waiting:
        return
    files.put(
        name="health wait script",
        src=str(WAIT_SCRIPT),
        dest=layout.wait_script(cfg),
        mode="755",
        _sudo=plat.sudo,
    )
    healthy(
        name=f"Wait for {what}: {', '.join(p.name for p in waiting)}",
        script=layout.wait_script(cfg),
        attempts=[attempt(cfg, plat, p, starting[p.name]) for p in waiting],
        # The rollback writes definitions and records, and restarts programs.
        _sudo=plat.sudo,
    )


def attempt(cfg: KittyConfig, plat: Platform, program: Program, decision: Decision) -> Attempt:
    undo = supervise.rollback(cfg, plat, program, decision)
    links = restore_links(supervise.record_of(cfg, plat, program), program.inputs, decision.changed)
    if decision.action == "install":
        no_undo = "a first install has nothing to roll back to"
    elif decision.action == "start":
        no_undo = "it was not running before this converge: nothing to roll back to"
    else:
        # A model file fetched again replaced the old one: there is no previous file to go back to.
        no_undo = f"what changed ({'; '.join(decision.reasons)}) cannot be put back: nothing to roll back to"
    return Attempt(
        name=program.name,
        spec=spec(program),
        check=supervise.crash_check(plat, program),
        tried=f"{decision.action} ({'; '.join(decision.reasons)})",
        undo=tuple(undo) if undo else None,
        links=tuple(links) if undo else (),
        no_undo=no_undo,
        on_cpu=offload.remedy(cfg, plat) if program.health and program.health.gpu_layers else "",
    )


def spec(program: Program) -> str:
    """`NAME|URL|TIMEOUT_S|LOG|EXPECT`, as wait-healthy.sh reads it (the CHECK follows).

    A llama-server that asks for GPU layers is `llama-gpu:N`: once healthy, its load must
    have put them on a GPU (tasks/supervise/offload.py)."""
    health = program.health
    expect = f"llama-gpu:{health.gpu_layers}" if health.expect == "llama" and health.gpu_layers else health.expect
    return f"{program.name}|{health.url}|{health.timeout}|{program.log}|{expect}"


@operation()
def healthy(script: str, attempts: list[Attempt]):
    """Wait, on the host, until each program answers its health probe; roll back and fail naming those that do not."""
    yield FunctionCommand(_wait, (script, attempts), {})


def _wait(state, host, script: str, attempts: list[Attempt]) -> bool:
    # The operation's own connector arguments (_sudo, its password): a FunctionCommand is not given them.
    arguments = connector_arguments(host)

    def run(command: str):
        # Through the connector with print_output: each change of state shows as it happens.
        return host.run_shell_command(StringCommand(command), print_output=True, **arguments)

    ok, output = run(shlex.join(["sh", script, *(a.argument for a in attempts)]))
    if ok:
        return True
    failures, degraded = {}, {}
    for line in output.output_lines:
        found = FAILED_LINE.match(line.strip())
        if found:
            failures[found.group(1)] = found.group(2)
        found = DEGRADED_LINE.match(line.strip())
        if found:
            degraded[found.group(1)] = found.group(2)
    failed = [a for a in attempts if a.name in failures]
    if degraded and not failed:
        # It serves, from the CPU: nothing to roll back (what ran before was no better placed,
        # it is this session's GPU that is missing); the converge fails with the remedy.
        for a in attempts:
            if a.name in degraded:
                host.log_styled(f"{a.name}: degraded: {degraded[a.name]}. {a.on_cpu}.", fg="red", log_func=logger.error)
        return False
    # A shared link goes back for every program that moved with it: they restart on what it points at again.
    back = [a for a in failed if a.undo]
    if any(a.links for a in back):
        back += [a for a in attempts if a.links and a not in back]
    undone = True
    for command in dict.fromkeys([c for a in back for c in a.links] + [c for a in back for c in a.undo]):
        undone = run(command)[0] and undone
    serving = bool(back) and undone and run(shlex.join(["sh", script, *(a.argument for a in back)]))[0]

    lines = []
    for a in failed:
        lines.append(f"{a.name}: tried {a.tried}; it did not serve: {failures[a.name]}.")
        if not a.undo:
            lines.append(f"  {a.no_undo}.")
    if back:
        names = ", ".join(a.name for a in back)
        if serving:
            lines.append(f"Rolled back {names}: the previous configuration serves again.")
        else:
            lines.append(f"Rolled back {names}, but the previous configuration does not serve either: see above.")
    if not failed:
        lines.append("the health wait failed: see above")
    for line in lines:
        host.log_styled(line, fg="red", log_func=logger.error)
    return False
