"""Long-running programs under the host's supervisor: launchd on macOS, systemd on Linux.

    converge(cfg, plat, slots, family)   install / start / restart once / leave / remove each
                                         program, remove undeclared members of its family,
                                         and return what was decided, for the health wait

A step (servers.py, images.py, runtime.py, macos.py) describes its programs
(program.py) and calls `converge`; it never decides a restart itself.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pyinfra import host, logger
from pyinfra.api import FactBase

from tasks import layout
from tasks.config import KittyConfig
from tasks.platform import Platform
from tasks.supervise import launchd, systemd
from tasks.supervise.decide import Decision
from tasks.supervise.program import Family, Health, Input, Program

__all__ = ["Decision", "Family", "Health", "Input", "Program", "Slot", "converge"]


@dataclass(frozen=True)
class Slot:
    """A declared program by its names on the host; `program` None: declared but disabled (removed)."""

    label: str
    unit: str
    program: Program | None
    # For people, when there is no program to name it: "server q4".
    name: str | None = None


def converge(cfg: KittyConfig, plat: Platform, slots: list[Slot], family: Family | None = None) -> list[Decision]:
    """Converge every slot, then remove what of `family` is on the host but not declared."""
    decisions = [_one(cfg, plat, slot) for slot in slots]
    if family:
        declared = {slot.label if plat.supervisor == "launchd" else slot.unit for slot in slots}
        for found in host.get_fact(Installed, **_where(cfg, plat, family)) or []:
            if found not in declared:
                label, unit = (found, "") if plat.supervisor == "launchd" else ("", found)
                decisions.append(_one(cfg, plat, Slot(label, unit, None), why="no longer declared"))
    _report(decisions)
    return decisions


def _one(cfg: KittyConfig, plat: Platform, slot: Slot, why: str = "disabled") -> Decision:
    if plat.supervisor == "launchd":
        record = f"{layout.records_dir(cfg)}/{slot.label}.started"
        decision = launchd.plan(slot.program, slot.label, record)
        launchd.job(
            name=_title(slot, decision, why), program=slot.program, label=slot.label, record=record, _sudo=plat.sudo
        )
    else:
        record = f"{layout.records_dir(cfg)}/{slot.unit}.started"
        decision = systemd.plan(slot.program, slot.unit, record)
        systemd.unit(
            name=_title(slot, decision, why), program=slot.program, unit=slot.unit, record=record, _sudo=plat.sudo
        )
    return decision


def _title(slot: Slot, decision: Decision, why: str) -> str:
    who = slot.program.name if slot.program else (slot.name or slot.label or slot.unit)
    if decision.action == "remove":
        return f"{who}: stop and remove ({why})"
    if decision.action == "none":
        return f"{who}: supervised"
    return f"{who}: {decision.action} ({'; '.join(decision.reasons)})"


def _report(decisions: list[Decision]) -> None:
    """Say, before anything runs (and with --dry), what will (re)start or stop, and why."""
    moving = [d for d in decisions if d.action not in ("none", "record")]
    for d in moving:
        logger.info(f"{host.print_prefix}{d.name}: will {d.action} ({'; '.join(d.reasons)})")


def _where(cfg: KittyConfig, plat: Platform, family: Family) -> dict:
    if plat.supervisor == "launchd":
        return {
            "directory": layout.LAUNCH_DAEMONS,
            "prefix": family.label_prefix,
            "suffix": ".plist",
            "records": layout.records_dir(cfg),
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
