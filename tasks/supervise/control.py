"""What the other wings ask the supervisor, answered in its own words.

    Job(label, unit, agent)               a program as both supervisors name it
    restart_command(plat, job)            POSIX sh: restart it as a converge does
    stop_command / start_command(plat, job)   POSIX sh: stop it (as a converge stops it), start it
    pid_command(plat, job)                POSIX sh: print its main PID (empty when none)
    status_command(plat, job)             POSIX sh: the supervisor's own account of it
    status_of(plat, output)               that account read: loaded, running, restarts, last exit, pid
    where_to_look(plat, log, job)         "its log, and the command that shows its state"
    installed(cfg, plat, family, agent)   labels or units of a family on the host
    installed_jobs(cfg, plat, family, agent)  the same as (name after the prefix, Job)
    definition(supervisor, program)       the plist or unit text of a program, as installed
    has_agents(plat)                      whether GUI-session agents exist here (launchd)
    gui_agent(plat, required)             the admin's GUI session as a home for LaunchAgents

bench, diagnose, verify, shutdown and the steps use these and never say `launchctl` or
`systemctl` themselves: a third supervisor, or a change in how one is driven, is a change
here and in the backend modules only (pyinfra's operations/util/service.py is the model:
one helper for every init system).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import FactBase
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import Home

from tasks.config import KittyConfig
from tasks.host.platform import Platform
from tasks.supervise import Installed, _where, launchd, stop, systemd
from tasks.supervise.program import Agent, Family, Program


@dataclass(frozen=True)
class Job:
    """A program as the supervisors call it: launchd's label (in `agent`'s GUI session when
    given, else a LaunchDaemon), systemd's unit."""

    label: str
    unit: str
    agent: Agent | None = None


def restart_command(plat: Platform, job: Job) -> str:
    if plat.supervisor == "launchd":
        # As a converge restarts it: SIGTERM and its stop time, never kickstart -k's SIGKILL.
        return launchd.restart_command(job.label, job.agent)
    return f"systemctl restart {shlex.quote(job.unit)}"


def stop_command(plat: Platform, job: Job) -> str:
    if plat.supervisor == "launchd":
        return launchd.stop_command(job.label, job.agent)
    return f"systemctl stop {shlex.quote(job.unit)}"


def start_command(plat: Platform, job: Job) -> str:
    if plat.supervisor == "launchd":
        return launchd.start_command(job.label, job.agent)
    return f"systemctl start {shlex.quote(job.unit)}"


def pid_command(plat: Platform, job: Job) -> str:
    if plat.supervisor == "launchd":
        target = shlex.quote(launchd.target_of(job.label, job.agent))
        return f"launchctl print {target} | sed -n 's/^[[:space:]]*pid = \\([0-9]*\\).*/\\1/p' | head -n1"
    return f"systemctl show -p MainPID --value {shlex.quote(job.unit)}"


def status_command(plat: Platform, job: Job) -> str:
    if plat.supervisor == "launchd":
        return f"launchctl print {shlex.quote(launchd.target_of(job.label, job.agent))} 2>&1"
    props = "LoadState,ActiveState,SubState,NRestarts,ExecMainStatus,MainPID"
    return f"systemctl show -p {props} {shlex.quote(job.unit)}"


def status_of(plat: Platform, output: str) -> dict:
    """What status_command printed, read: {"loaded", "running", "restarts": int | None,
    "last_exit": str | None, "pid": int | None, "state": for people}."""
    if plat.supervisor == "systemd":
        fields = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
        pid = int(fields.get("MainPID", "0") or 0)
        restarts = fields.get("NRestarts", "")
        return {
            "loaded": fields.get("LoadState") == "loaded",
            "running": fields.get("ActiveState") == "active" and fields.get("SubState") == "running",
            "restarts": int(restarts) if restarts.isdigit() else None,
            "last_exit": fields.get("ExecMainStatus") or None,
            "pid": pid or None,
            "state": f"{fields.get('ActiveState', '?')}/{fields.get('SubState', '?')}",
        }
    found = {
        key: re.search(rf"^\s*{key} = (.*)$", output, re.MULTILINE)
        for key in ("state", "pid", "runs", "last exit code")
    }
    value = {key: (m.group(1).strip() if m else None) for key, m in found.items()}
    return {
        "loaded": value["state"] is not None,
        "running": value["state"] == "running",
        "restarts": max(int(value["runs"]) - 1, 0) if (value["runs"] or "").isdigit() else None,
        "last_exit": value["last exit code"],
        "pid": int(value["pid"]) if (value["pid"] or "").isdigit() else None,
        "state": value["state"] or "not loaded",
    }


def where_to_look(plat: Platform, log: str, job: Job) -> str:
    """For people: the program's log, and the command that shows what the supervisor knows."""
    if plat.supervisor == "launchd":
        return f"{log}, sudo launchctl print {launchd.target_of(job.label, job.agent)}"
    return f"{log}, journalctl -u {job.unit}"


def installed(cfg: KittyConfig, plat: Platform, family: Family, agent: Agent | None = None) -> list[str]:
    """Labels (launchd) or units (systemd) of `family` on the host: a plist/unit, or a record of one.

    `agent`: the family's LaunchAgents in that GUI session rather than its LaunchDaemons."""
    return host.get_fact(Installed, **_where(cfg, plat, family, agent)) or []


def definition(supervisor: str, program: Program) -> str:
    """The plist (`launchd`) or unit (`systemd`) text of `program`, exactly as it is installed."""
    return launchd.render(program) if supervisor == "launchd" else systemd.render(program)


def installed_jobs(
    cfg: KittyConfig, plat: Platform, family: Family, agent: Agent | None = None
) -> list[tuple[str, Job]]:
    """Each installed member of `family` as (its name after the family's prefix, its Job)."""
    launchd = plat.supervisor == "launchd"
    return [
        (stop.short_name(plat, family, name), Job(name, "", agent) if launchd else Job("", name))
        for name in installed(cfg, plat, family, agent)
    ]


class GuiSession(FactBase[dict]):
    """The connecting user's uid, and whether its GUI login session (launchd's gui/<uid>) exists now."""

    def command(self) -> str:
        return 'u=$(id -u) && echo "$u" && { launchctl print "gui/$u" >/dev/null 2>&1 && echo session || echo none; }'

    def process(self, output) -> dict:
        lines = [line.strip() for line in output]
        uid = int(lines[0]) if lines and lines[0].isdigit() else None
        return {"uid": uid, "session": len(lines) > 1 and lines[1] == "session"}


def has_agents(plat: Platform) -> bool:
    """Whether programs can run as agents of a GUI session (launchd's LaunchAgents) beside the
    system's own (LaunchDaemons): so a family may have jobs of both kinds to look for."""
    return plat.supervisor == "launchd"


def gui_agent(plat: Platform, required: bool) -> Agent | None:
    """The admin's GUI session as a home for LaunchAgents (kitty_launchd.kind: agent).

    `required`: the session must exist now (a converge that starts agents); else it is
    only named, so agents left from an earlier `agent` setting can be found and removed."""
    found = host.get_fact(GuiSession) or {}
    home = host.get_fact(Home)
    if found.get("uid") is None or not home:
        if required:
            raise DeployError(f"{host.name}: cannot tell the uid and home of {plat.user!r} for its LaunchAgents")
        return None
    if required and not found.get("session"):
        raise DeployError(
            f"{host.name}: kitty_launchd.kind is 'agent': the model servers run as LaunchAgents in the GUI "
            f"session of {plat.user!r} (launchd's gui/{found['uid']}), which does not exist now. Log in as "
            f"{plat.user!r} at the Mac's screen and keep it so across reboots (System Settings > Users & "
            "Groups > Automatically log in, which needs FileVault off), then converge again; or set "
            "kitty_launchd.kind to 'daemon'"
        )
    return Agent.of(plat.user, found["uid"], home)
