"""Waiting for (re)started programs to serve: one wait loop on the host, for every supervised program.

The loop is templates/wait-healthy.sh (POSIX sh: macOS runs it with bash 3.2
in POSIX mode). It runs ON the host, so programs that listen only on the
host's loopback are reachable even from a laptop's deploy. It polls every
program at once, prints each change of state, and on failure names the
program with the tail of its log.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from pyinfra.api import FunctionCommand, operation
from pyinfra.operations import files

from tasks import layout
from tasks.config import KittyConfig
from tasks.platform import Platform
from tasks.supervise import Decision, Program

WAIT_SCRIPT = Path(__file__).resolve().parents[1] / "templates" / "wait-healthy.sh"


def wait(cfg: KittyConfig, plat: Platform, programs: list[Program], decisions: list[Decision], what: str) -> None:
    """Plan one wait for the programs this converge (re)starts; nothing when none does."""
    starting = {d.name for d in decisions if d.starts}
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
        specs=[spec(p) for p in waiting],
    )


def spec(program: Program) -> str:
    """`NAME|URL|TIMEOUT_S|LOG|EXPECT`, as wait-healthy.sh reads it."""
    health = program.health
    return f"{program.name}|{health.url}|{health.timeout}|{program.log}|{health.expect}"


@operation()
def healthy(script: str, specs: list[str]):
    """Wait, on the host, until each program answers its health probe; fail naming those that do not."""
    yield FunctionCommand(_wait, (script, specs), {})


def _wait(state, host, script: str, specs: list[str]) -> bool:
    # Through the connector with print_output: each change of state shows as it happens.
    ok, _ = host.run_shell_command(shlex.join(["sh", script, *specs]), print_output=True)
    return ok
