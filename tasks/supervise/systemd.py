"""The systemd backend of a supervised program: its unit, what systemd has, one operation.

The same decision table as launchd.py (decide.py), as systemctl verbs:

    install / start  write unit, daemon-reload, enable --now
    reload           write unit, daemon-reload, restart
    restart          restart                 (same unit, new build or model)
    remove           disable --now, delete unit and record, daemon-reload

`restart` of a stopped unit would also start it, but a stopped unit is
decided "start": one start, never a restart on top of it.

Before a (re)start the unit and record it ran with are kept beside the
record; `rollback` puts them back when the new process does not serve, and
`crash_check` tells the health wait, from systemd itself, that it died.
"""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import operation
from pyinfra.facts.files import Sha1File
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus
from pyinfra.operations import files

from tasks.engine import host_file
from tasks.host.layout import SYSTEMD_UNITS
from tasks.supervise.decide import (
    Decision,
    Observed,
    ProgramRecord,
    decide,
    forget_previous,
    keep_previous,
    previous_definition,
    restore_links,
    restore_record,
    sha1_of,
    where,
    write_record,
)
from tasks.supervise.program import Program


def unit_path(unit: str) -> str:
    return f"{SYSTEMD_UNITS}/{unit}"


def render(program: Program) -> str:
    """The unit text for `program`."""
    bad = [value for value in [program.log, program.working_directory, program.user or ""] if "\n" in value]
    if bad:
        raise ValueError(f"systemd unit {program.unit}: {bad[0]!r} has a newline a unit cannot hold")
    return host_file.render(
        "program.service.j2",
        description=program.description,
        after=program.after,
        user=program.user,
        group=program.group,
        working_directory=program.working_directory,
        arguments=program.argv,
        environment=program.env,
        restart_delay=program.restart_delay,
        log_path=program.log,
        stop_timeout=program.stop_timeout,
        kill_main_only=program.kill_main_only,
        open_files=program.open_files,
    )


def observe(unit: str, record: str, program: Program | None, **how) -> Observed:
    """What the host has; `how`: the operation's `_sudo`, when read outside it (plan)."""
    state = host.get_fact(ProgramRecord, record=record, inputs=where(program.inputs) if program else [], **how)
    return Observed(
        running=bool((host.get_fact(SystemdStatus, services=unit, **how) or {}).get(unit)),
        definition_sha1=host.get_fact(Sha1File, path=unit_path(unit), **how),
        record=state["record"],
        inputs_now=state["inputs_now"],
    )


def plan(program: Program | None, unit: str, record: str, **how) -> Decision:
    """The decision for one unit, as the operation will take it (for the restart table and the health wait).

    `how`: the `_sudo` the operation runs with, so the plan reads what the operation reads
    (and the operation finds those facts already read: tasks/engine/fact_cache.py)."""
    definition = render(program) if program else None
    name = unit if program is None else program.name
    return decide(program, name, definition, observe(unit, record, program, **how), planning=True)


@operation()
def unit(program: Program | None, unit: str, record: str):
    """Converge one systemd unit: `program` None removes it (disabled, or no longer declared).

    + program: the supervised program, or None
    + unit: its unit name (`kitty-llama-q4.service`)
    + record: where the host keeps what its process was started with
    """
    path = unit_path(unit)
    quoted = shlex.quote(unit)
    observed = observe(unit, record, program)
    definition = render(program) if program else None
    name = unit if program is None else program.name
    decision = decide(program, name, definition, observed, planning=not host.state.is_executing)

    if decision.action == "remove":
        if observed.definition_sha1 or observed.running:
            # `|| true`: a unit file deleted by hand is not loaded, and that is the wanted end.
            yield f"systemctl disable --now {quoted} || true"
        yield from files.file._inner(path=path, present=False)
        yield from files.file._inner(path=record, present=False)
        for kept in forget_previous(record):
            yield from files.file._inner(path=kept, present=False)
        if observed.definition_sha1:
            yield "systemctl daemon-reload"
        return
    if program is None:
        host.noop(f"unit {unit} is absent")
        return

    # What runs now, for the health wait to put back if the new process does not serve.
    commands = [keep_previous(record, path)] if decision.starts else []
    commands += list(
        files.put._inner(
            src=StringIO(definition), dest=path, user="root", group="root", mode="644", create_remote_dir=False
        )
    )
    if observed.definition_sha1 != sha1_of(definition):
        commands.append("systemctl daemon-reload")
    if decision.action in ("install", "start"):
        commands.append(f"systemctl enable --now {quoted}")
    elif decision.action in ("reload", "restart"):
        commands.append(f"systemctl restart {quoted}")
    if decision.starts:
        # A (re)start by the deploy is a new beginning: systemd's restart counter (NRestarts,
        # what the crash-loop checks read) would otherwise still count a crash loop it ended.
        # After the start: a restart of a unit waiting to auto-restart is itself counted as one.
        commands.append(f"systemctl reset-failed {quoted} 2>/dev/null || true")
    # Enabled at boot whatever else happens: a host stopped by stop.py is enabled again by a converge.
    if decision.action not in ("install", "start") and not (host.get_fact(SystemdEnabled, services=unit) or {}).get(
        unit
    ):
        commands.append(f"systemctl enable {quoted}")
    if decision.changes:
        # After the (re)start, from what the host has now: a failed start is retried next time.
        commands.append(write_record(record, definition, program.inputs))
    if not commands:
        host.noop(f"unit {unit} is running and up to date")
    yield from commands


def crash_check(program: Program) -> str:
    """POSIX sh: exit non-zero, printing systemd's view, when the unit's process died or waits to be restarted.

    `auto-restart` is the state between a crash and the next attempt (RestartSec): a
    crash-looping unit spends nearly all its time there, so a poll a second sees it.
    """
    unit = shlex.quote(program.unit)
    return (
        f"s=$(systemctl show -p ActiveState -p SubState -p ExecMainStatus -p NRestarts {unit} 2>&1); "
        "case $s in *ActiveState=failed* | *ActiveState=inactive* | *SubState=auto-restart*) "
        "echo systemd: $s; exit 1 ;; esac"
    )


def rollback(program: Program, decision: Decision, record: str) -> list[str] | None:
    """Commands that put back what the unit ran before this converge's (re)start; None: nothing to go back to."""
    unit = shlex.quote(program.unit)
    if decision.action == "reload":
        path = shlex.quote(unit_path(program.unit))
        kept = shlex.quote(previous_definition(record))
        return [
            f"mv -f {kept} {path}",
            "systemctl daemon-reload",
            f"systemctl restart {unit}",
            restore_record(record),
        ]
    if decision.action == "restart" and restore_links(record, program.inputs, decision.changed):
        return [f"systemctl restart {unit}", restore_record(record)]
    return None
