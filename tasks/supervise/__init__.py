"""Long-running programs under the host's supervisor: launchd on macOS, systemd on Linux.

    converge(cfg, plat, slots, family)   install / start / restart once / leave / remove each
                                         program, remove undeclared members of its family,
                                         and return what was decided, for the health wait
    restart_table()                      every program this host's converge planned: whether
                                         it will restart and why, printed before anything runs
    crash_check(plat, program)           POSIX sh: non-zero when the supervisor says it died
    rollback(cfg, plat, program, d)      commands that put back what it ran before decision d

A step (servers.py, images.py, runtime.py, macos.py) describes its programs
(program.py) and calls `converge`; it never decides a restart itself.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.facts.files import FileContents

from tasks.config import KittyConfig
from tasks.engine import run_record
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.supervise import changes, launchd, systemd
from tasks.supervise.decide import Decision
from tasks.supervise.program import Agent, Family, Health, Input, Program

__all__ = [
    "Agent",
    "Decision",
    "Family",
    "Health",
    "Input",
    "Program",
    "Slot",
    "converge",
    "crash_check",
    "restart_table",
    "rollback",
]


@dataclass(frozen=True)
class Slot:
    """A declared program by its names on the host; `program` None: declared but disabled (removed)."""

    label: str
    unit: str
    program: Program | None
    # For people, when there is no program to name it: "server q4".
    name: str | None = None
    # Why a slot without a program is removed, for the operation's name and the table.
    why: str = "disabled"
    # launchd: a LaunchAgent in this GUI session, not a LaunchDaemon (the program's own, when it has one).
    agent: Agent | None = None


def converge(
    cfg: KittyConfig, plat: Platform, slots: list[Slot], family: Family | None = None, agent: Agent | None = None
) -> list[Decision]:
    """Converge every slot, then remove what of `family` is on the host but not declared.

    `agent`: the family's LaunchAgents in that GUI session rather than its LaunchDaemons."""
    decisions = [_one(cfg, plat, slot, slot.why) for slot in slots]
    if family:
        declared = {slot.label if plat.supervisor == "launchd" else slot.unit for slot in slots}
        for found in host.get_fact(Installed, **_where(cfg, plat, family, agent)) or []:
            if found not in declared:
                label, unit = (found, "") if plat.supervisor == "launchd" else ("", found)
                decisions.append(_one(cfg, plat, Slot(label, unit, None, agent=agent), why="no longer declared"))
    return decisions


def records_of(cfg: KittyConfig, agent: Agent | None) -> str:
    """Where the records of LaunchDaemons (and systemd units), or of one GUI session's LaunchAgents, are."""
    return f"{layout.records_dir(cfg)}/gui-{agent.uid}" if agent else layout.records_dir(cfg)


def _one(cfg: KittyConfig, plat: Platform, slot: Slot, why: str = "disabled") -> Decision:
    if plat.supervisor == "launchd":
        agent = slot.program.agent if slot.program else slot.agent
        record = f"{records_of(cfg, agent)}/{slot.label}.started"
        decision = launchd.plan(slot.program, slot.label, record, agent, _sudo=plat.sudo)
        launchd.job(
            name=_title(slot, decision, why),
            program=slot.program,
            label=slot.label,
            record=record,
            agent=agent,
            _sudo=plat.sudo,
        )
    else:
        record = f"{layout.records_dir(cfg)}/{slot.unit}.started"
        decision = systemd.plan(slot.program, slot.unit, record, _sudo=plat.sudo)
        systemd.unit(
            name=_title(slot, decision, why), program=slot.program, unit=slot.unit, record=record, _sudo=plat.sudo
        )
    # The table and the health wait say what changed; the operation's name stays short.
    explained = _explained(decision, slot.program, plat, why)
    _planned(slot, explained)
    return explained


def _title(slot: Slot, decision: Decision, why: str) -> str:
    who = slot.program.name if slot.program else (slot.name or slot.label or slot.unit)
    if decision.action == "remove":
        return f"{who}: stop and remove ({why})"
    if decision.action == "none":
        return f"{who}: supervised"
    return f"{who}: {decision.action} ({'; '.join(decision.reasons)})"


def _explained(decision: Decision, program: Program | None, plat: Platform, why: str) -> Decision:
    """A reload's reasons as what changed in the definition (`ctx_size 2048 → 4096`), read from the host."""
    if decision.action == "remove":
        return replace(decision, reasons=(why,))
    if decision.action != "reload" or program is None:
        return decision
    if plat.supervisor == "launchd":
        path = launchd.plist_path(program.label, program.agent)
        parse, new = changes.parse_plist, launchd.render(program)
    else:
        path, parse, new = systemd.unit_path(program.unit), changes.parse_unit, systemd.render(program)
    installed = host.get_fact(FileContents, path=path)
    if installed is None:
        return decision
    found = changes.describe(parse("\n".join(installed)), parse(new))
    return replace(decision, reasons=tuple(found) or decision.reasons)


# --- The restart table ------------------------------------------------------------------

WILL = {
    "install": "start",
    "start": "start",
    "reload": "restart",
    "restart": "restart",
    "record": "no restart",
    "none": "no restart",
    "remove": "stop, remove",
}


def _planned(slot: Slot, decision: Decision) -> None:
    if slot.program is None and decision.action == "none":
        # Neither declared nor on the host (a disabled server never installed, no RPC worker here).
        return
    name = slot.program.name if slot.program else (slot.name or slot.label or slot.unit)
    note = slot.program.note if slot.program else ""
    _planned_rows().append((name, decision, note))


def _planned_rows() -> list[tuple[str, str, str]]:
    # What this host's converge planned, in order: (name, decision, note). Per pyinfra run
    # and host (tasks/engine/run_record.py), so plans of several hosts or tests never mix.
    return run_record.kept(host, "planned restarts").setdefault("rows", [])


def restart_table() -> list[str]:
    """Every supervised program this host's converge planned: will it (re)start or stop, and why.

    Decided at plan time from facts (the record, the definition on the host, what
    `current` will point at), so `--dry` shows exactly what a converge will do.
    """
    planned = _planned_rows()
    if not planned:
        return []
    rows = [("program", "will", "why", "context")]
    for name, decision, note in planned:
        why = "; ".join(decision.reasons) if decision.action not in ("none", "record") else "up to date"
        rows.append((name, WILL[decision.action], why, note))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}".rstrip() for a, b, c, d in rows]
    moving = [name for name, decision, _ in planned if decision.action not in ("none", "record")]
    if moving:
        lines.append(f"{len(moving)} of {len(planned)} will (re)start or stop: {', '.join(moving)}")
    else:
        lines.append("nothing will restart")
    return lines


# --- Fail fast, roll back ------------------------------------------------------------------


def crash_check(plat: Platform, program: Program) -> str:
    """POSIX sh for wait-healthy.sh's CHECK: exits non-zero, saying why, when the supervisor reports it died."""
    return launchd.crash_check(program) if plat.supervisor == "launchd" else systemd.crash_check(program)


def record_of(cfg: KittyConfig, plat: Platform, program: Program) -> str:
    name = program.label if plat.supervisor == "launchd" else program.unit
    return f"{records_of(cfg, program.agent)}/{name}.started"


def rollback(cfg: KittyConfig, plat: Platform, program: Program, decision: Decision) -> list[str] | None:
    """Commands that put back what `program` ran before `decision`; None: nothing to go back to."""
    backend = launchd if plat.supervisor == "launchd" else systemd
    return backend.rollback(program, decision, record_of(cfg, plat, program))


def _where(cfg: KittyConfig, plat: Platform, family: Family, agent: Agent | None = None) -> dict:
    if plat.supervisor == "launchd":
        return {
            "directory": agent.folder if agent else layout.LAUNCH_DAEMONS,
            "prefix": family.label_prefix,
            "suffix": ".plist",
            "records": records_of(cfg, agent),
        }
    return {
        "directory": layout.SYSTEMD_UNITS,
        "prefix": family.unit_prefix,
        "suffix": "",
        "records": layout.records_dir(cfg),
    }


class Installed(FactBase[list]):
    """Labels or units of a family on the host: a plist/unit in `directory`, or a record of one.

    A record without its plist/unit is a program removed by hand halfway: it is pruned as well.
    """

    default = list

    def command(self, directory: str, prefix: str, suffix: str, records: str) -> str:
        d, p, r = shlex.quote(directory), shlex.quote(prefix), shlex.quote(records)
        return (
            f"for f in {d}/{p}*{shlex.quote(suffix)} {r}/{p}*.started; do "
            '[ -f "$f" ] && basename "$f"; done 2>/dev/null; true'
        )

    def process(self, output) -> list:
        names = set()
        for line in output:
            name = line.strip()
            for suffix in (".started", ".plist"):
                if name.endswith(suffix):
                    name = name[: -len(suffix)]
            if name:
                names.add(name)
        return sorted(names)
