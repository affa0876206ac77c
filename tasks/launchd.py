"""TEMPORARY bridge for the colima LaunchDaemon (tasks/stack.py) while it moves to tasks/supervise.

Removed once colima is a supervised Program like every other long-running program.
"""

from __future__ import annotations

from tasks.supervise import launchd as _backend
from tasks.supervise.launchd import EXIT_MARKER, LaunchdJob, parse_print  # noqa: F401
from tasks.supervise.program import Program

_PROGRAMS: dict[str, Program] = {}


def plist_path(label: str, kind: str = "daemon") -> str:
    return _backend.plist_path(label)


def render_plist(
    *, job_label, arguments, working_directory, log, environment, throttle_interval, user=None, group=None
):
    program = Program(
        name=job_label,
        label=job_label,
        unit="",
        description=job_label,
        argv=list(arguments),
        log=log,
        working_directory=working_directory,
        user=user,
        group=group,
        env=dict(environment),
        restart_delay=throttle_interval,
    )
    text = _backend.render(program)
    _PROGRAMS[text] = program
    return text


def job(job_label: str, plist: str, _sudo: bool = True, name: str | None = None):
    record = f"/var/db/kitty/{job_label}.started"
    return _backend.job(name=name or job_label, program=_PROGRAMS[plist], label=job_label, record=record, _sudo=_sudo)
