"""One long-running program as a systemd unit: written, started once, restarted only when it or its inputs changed.

Shared by the model servers and the images service; the unit text comes from
their templates.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.systemd import SystemdStatus
from pyinfra.operations import files, systemd
from pyinfra.operations.util import any_changed

from tasks.platform import Platform

UNIT_DIR = "/etc/systemd/system"


def converge(
    label: str, unit: str, text: str, plat: Platform, inputs: list[OperationMeta], restart_reason: str
) -> list[OperationMeta]:
    """Install `unit` with `text`; returns the operations that (re)start it when they change something."""
    running = (host.get_fact(SystemdStatus, services=unit) or {}).get(unit)
    written = files.put(
        name=f"{label}: unit",
        src=StringIO(text),
        dest=f"{UNIT_DIR}/{unit}",
        user="root",
        group="root",
        mode="644",
        _sudo=plat.sudo,
    )
    systemd.daemon_reload(name=f"{label}: reload systemd", _if=written.did_change, _sudo=plat.sudo)
    if not running:
        # Not running (new, stopped or crash-looping): one start, no restart on top.
        return [systemd.service(name=f"{label}: start", service=unit, running=True, enabled=True, _sudo=plat.sudo)]
    enabled = systemd.service(name=f"{label}: enable at boot", service=unit, enabled=True, _sudo=plat.sudo)
    restarted = systemd.service(
        name=f"{label}: restart ({restart_reason})",
        service=unit,
        running=True,
        restarted=True,
        _if=any_changed(written, *inputs),
        _sudo=plat.sudo,
    )
    return [enabled, restarted]


def remove(label: str, unit: str, plat: Platform) -> None:
    """Stopped, disabled and gone; nothing planned when it already is."""
    if unit in (host.get_fact(SystemdStatus, services=unit) or {}):
        systemd.service(name=f"{label}: stop and disable", service=unit, running=False, enabled=False, _sudo=plat.sudo)
    removed = files.file(name=f"{label}: remove unit", path=f"{UNIT_DIR}/{unit}", present=False, _sudo=plat.sudo)
    systemd.daemon_reload(name=f"{label}: reload systemd", _if=removed.did_change, _sudo=plat.sudo)
