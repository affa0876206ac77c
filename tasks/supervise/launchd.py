"""The launchd backend of a supervised program: its plist, what launchd has, one operation.

pyinfra's own `launchd.service` only runs the legacy `launchctl start/stop`
on the caller's domain. This uses the modern verbs on the `system` domain
(LaunchDaemons: they run without a GUI login), the way nix-darwin does:
render the plist, compare it with the one installed, reload only on a
difference. What to do is decided in decide.py, the same table systemd.py
follows; here it becomes launchctl verbs:

    install / start  write plist, enable (a disabled override blocks bootstrap), bootstrap
    reload           bootout (wait until gone), write plist, bootstrap
    restart          bootout (wait until gone), bootstrap   (same plist, new build or model)
    remove           bootout, delete plist and record

A restart is never `kickstart -k`: that kills with SIGKILL (in-flight requests and an
image being generated die), and newer macOS has been reported to refuse a rebuilt
binary restarted that way (launch constraints). bootout sends SIGTERM and launchd
waits the job's ExitTimeOut, as a reload does.

`bootstrap` with RunAtLoad starts the process: no kickstart on top of it, and
never a kickstart of a job that is not loaded (launchctl answers 113).

Before a (re)start the plist and record it ran with are kept beside the
record; `rollback` puts them back when the new process does not serve, and
`crash_check` tells the health wait, from `launchctl print`, that it died.

launchctl quirks handled (launchctl(1), ../shared/notes/macos-facts.md):
- `bootout` returns before the job is gone (exit 0, or 36 "Operation now in
  progress" while it stops): wait until `launchctl print` no longer finds it, for
  the job's own `exit timeout` (launchd's SIGKILL comes then) plus a margin.
- `bootstrap` fails with 5 "Input/output error" (or 37) while a booted-out
  job still settles, and can exit non-zero although the job did load: retry,
  and believe `launchctl print`.
"""

from __future__ import annotations

import re
import shlex
from io import StringIO
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, operation
from pyinfra.api.exceptions import OperationError
from pyinfra.facts.files import Sha1File
from pyinfra.operations import files

from tasks.engine import host_file
from tasks.host.layout import LAUNCH_DAEMONS
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
    where,
    write_record,
)
from tasks.supervise.program import Agent, Program

DOMAIN = "system"
# `launchctl print` exits 113 for a job the domain does not have.
NOT_FOUND = 113
# Seconds a booted-out job may stay listed beyond its exit timeout (launchd's SIGKILL, the
# process's exit, launchd letting it go).
BOOTOUT_MARGIN = 15
# launchd's own ExitTimeOut when `launchctl print` shows none.
DEFAULT_EXIT_TIMEOUT = 20
EXIT_MARKER = "kitty-launchctl-exit="
# Characters XML 1.0 cannot carry at all, escaped or not.
XML_INVALID = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def plist_path(label: str, agent: Agent | None = None) -> str:
    """A LaunchDaemon's plist, or a LaunchAgent's in its user's ~/Library/LaunchAgents."""
    return f"{agent.folder if agent else LAUNCH_DAEMONS}/{label}.plist"


def domain_of(agent: Agent | None) -> str:
    """`system`, or the GUI session's `gui/<uid>` of a LaunchAgent."""
    return agent.domain if agent else DOMAIN


def target_of(label: str, agent: Agent | None = None) -> str:
    return f"{domain_of(agent)}/{label}"


def render(program: Program) -> str:
    """The plist text of a LaunchDaemon for `program`."""
    values = [program.label, program.working_directory, program.log, program.user or "", program.group or ""]
    values += [*program.argv, *program.env.keys(), *program.env.values()]
    bad = [value for value in values if XML_INVALID.search(str(value))]
    if bad:
        raise ValueError(f"launchd job {program.label}: {bad[0]!r} has a control character a plist cannot hold")
    return host_file.render(
        "program.plist.j2",
        label=program.label,
        arguments=program.argv,
        working_directory=program.working_directory,
        log_path=program.log,
        environment=program.env,
        # A LaunchAgent runs as its session's user: no UserName.
        user=None if program.agent else program.user,
        group=None if program.agent else program.group,
        keep_alive=program.keep_alive,
        restart_delay=program.restart_delay,
        stop_timeout=program.stop_timeout,
        open_files=program.open_files,
    )


# --- What launchd has ----------------------------------------------------


class LaunchdJob(FactBase):
    """One job as `launchctl print <domain>/<label>` sees it.

        {"loaded": True, "state": "running", "pid": 4242, "last_exit_code": None,
         "last_signal": None, "program": "/opt/kitty/current/bin/llama-server",
         "arguments": [...], "path": "/Library/LaunchDaemons/x.plist",
         "disabled": False, "error": None}

    `loaded` is False when the domain has no such job (exit 113). Any other
    failure of `launchctl print` is in `error`, for the operation to report.
    """

    def command(self, target: str) -> str:
        job_domain, _, job_label = target.rpartition("/")
        override = shlex.quote('"' + job_label + '" =>')
        # Always exits 0: "not loaded" is an answer, not a failure of the fact.
        return (
            f"launchctl print {shlex.quote(target)} 2>&1; echo {EXIT_MARKER}$?; "
            f"launchctl print-disabled {shlex.quote(job_domain)} 2>/dev/null | grep -F {override} || true"
        )

    @staticmethod
    def default() -> dict[str, Any]:
        return _status(loaded=False)

    def process(self, output) -> dict[str, Any]:
        lines = list(output)
        marks = [i for i, line in enumerate(lines) if line.startswith(EXIT_MARKER)]
        if not marks:
            return _status(loaded=False, error="no exit status from launchctl print: " + " ".join(lines)[:300])
        printed, code, overrides = lines[: marks[0]], lines[marks[0]], lines[marks[0] + 1 :]
        code = int(code[len(EXIT_MARKER) :] or -1)
        # Older macOS writes `=> true` for a disabled job, newer `=> disabled`.
        disabled = any(line.rsplit("=>", 1)[-1].strip() in ("disabled", "true") for line in overrides)
        if code == NOT_FOUND or any("Could not find service" in line for line in printed):
            return _status(loaded=False, disabled=disabled)
        if code != 0:
            text = " ".join(line.strip() for line in printed)[:300]
            return _status(loaded=False, disabled=disabled, error=f"exit {code}: {text}")
        return parse_print(printed, disabled=disabled)


def _status(*, loaded: bool, disabled: bool = False, error: str | None = None, **found) -> dict[str, Any]:
    status = {
        "loaded": loaded,
        "state": None,
        "pid": None,
        "last_exit_code": None,
        "last_signal": None,
        "program": None,
        "arguments": [],
        "path": None,
        "disabled": disabled,
        "error": error,
    }
    status.update(found)
    return status


def parse_print(lines: list[str], disabled: bool = False) -> dict[str, Any]:
    """The fields we need from the output of `launchctl print` for a loaded job.

    Its format is for humans and nests blocks (`arguments = {`, `endpoints = {`,
    `domain = {` with a `state` of its own): keep only the job's own level.
    """
    fields: dict[str, str] = {}
    arguments: list[str] = []
    blocks: list[str] = []
    for raw in lines:
        line = raw.strip()
        if line.endswith("{"):
            blocks.append(line[:-1].rstrip(" =").strip())
        elif line == "}":
            if blocks:
                blocks.pop()
        elif len(blocks) == 1 and " = " in line:
            key, _, value = line.partition(" = ")
            fields[key.strip()] = value.strip()
        elif len(blocks) == 2 and blocks[1] == "arguments" and line:
            arguments.append(line)
    pid = fields.get("pid", "")
    # "0", "1", "78: EX_CONFIG" or "(never exited)".
    exit_code = re.match(r"-?\d+", fields.get("last exit code", ""))
    return _status(
        loaded=True,
        disabled=disabled,
        state=fields.get("state"),
        pid=int(pid) if pid.isdigit() else None,
        last_exit_code=int(exit_code.group()) if exit_code else None,
        last_signal=fields.get("last terminating signal"),
        program=fields.get("program"),
        arguments=arguments,
        path=fields.get("path"),
    )


# --- The operation -------------------------------------------------------


def observe(
    label: str, record: str, program: Program | None, agent: Agent | None = None, **how
) -> tuple[dict, Observed]:
    """What the host has; `how`: the operation's `_sudo`, when read outside it (plan)."""
    target = target_of(label, agent)
    status = host.get_fact(LaunchdJob, target=target, **how)
    if status["error"]:
        raise OperationError(f"launchctl print {target} failed ({status['error']}): cannot tell if it is loaded")
    state = host.get_fact(ProgramRecord, record=record, inputs=where(program.inputs) if program else [], **how)
    return status, Observed(
        # Loaded is what counts: launchd itself keeps a loaded KeepAlive job running.
        running=status["loaded"],
        definition_sha1=host.get_fact(Sha1File, path=plist_path(label, agent), **how),
        record=state["record"],
        inputs_now=state["inputs_now"],
    )


def plan(program: Program | None, label: str, record: str, agent: Agent | None = None, **how) -> Decision:
    """The decision for one job, as the operation will take it (for the restart table and the health wait).

    `how`: the `_sudo` the operation runs with, so the plan reads what the operation reads."""
    definition = render(program) if program else None
    _, observed = observe(label, record, program, agent, **how)
    return decide(program, label if program is None else program.name, definition, observed, planning=True)


@operation()
def job(program: Program | None, label: str, record: str, timeout: int = 60, agent: Agent | None = None):
    """Converge one LaunchDaemon (or LaunchAgent): `program` None removes it (disabled, or no longer declared).

    + program: the supervised program, or None
    + label: its launchd Label
    + record: where the host keeps what its process was started with
    + timeout: seconds to wait for launchd to load the job (a bootout waits the job's own stop time)
    + agent: a LaunchAgent in this GUI session (the program's own when it has one), not a LaunchDaemon
    """
    agent = program.agent if program else agent
    path = plist_path(label, agent)
    target = target_of(label, agent)
    status, observed = observe(label, record, program, agent)
    definition = render(program) if program else None
    name = label if program is None else program.name
    decision = decide(program, name, definition, observed, planning=not host.state.is_executing)

    if decision.action == "remove":
        if status["loaded"]:
            yield _bootout(target)
        yield from files.file._inner(path=path, present=False)
        yield from files.file._inner(path=record, present=False)
        for kept in forget_previous(record):
            yield from files.file._inner(path=kept, present=False)
        return
    if program is None:
        host.noop(f"launchd job {target} is absent")
        return

    # What runs now, for the health wait to put back if the new process does not serve.
    commands = [keep_previous(record, path)] if decision.starts else []
    if decision.action in ("reload", "restart"):
        # Out before the new plist is written: if anything fails in between, the
        # next converge sees "not loaded" and bootstraps. A restart goes the same way.
        commands.append(_bootout(target))
    # The plist, its owner and mode (root:wheel 0644, or launchd refuses it; an agent's: its user's, 0644).
    if agent:
        commands.append(f"install -d -m 755 -o {shlex.quote(agent.user)} {shlex.quote(agent.folder)}")
    owner = {"user": agent.user} if agent else {"user": "root", "group": "wheel"}
    commands += list(
        files.put._inner(src=StringIO(definition), dest=path, mode="644", create_remote_dir=False, **owner)
    )
    # A disabled override makes bootstrap fail, and keeps the job off after a reboot.
    if status["disabled"]:
        commands.append(f"launchctl enable {shlex.quote(target)}")
    if decision.action in ("install", "start", "reload", "restart"):
        commands.append(_bootstrap(domain_of(agent), path, target, timeout))
    if decision.changes:
        # After the (re)start, from what the host has now: a failed start is retried next time.
        commands.append(write_record(record, definition, program.inputs))
    if not commands:
        host.noop(f"launchd job {target} is loaded and up to date")
    yield from commands


def exit_timeout_command(target: str) -> str:
    """POSIX sh printing the job's exit timeout as launchd has it (`launchctl print`), or the default."""
    t = shlex.quote(target)
    return (
        f"launchctl print {t} 2>/dev/null | sed -n 's/^[[:space:]]*exit timeout = \\([0-9][0-9]*\\).*/\\1/p' "
        f"| head -n 1 | grep . || echo {DEFAULT_EXIT_TIMEOUT}"
    )


def _bootout(target: str) -> str:
    """bootout, then wait until `print` no longer finds the job: up to its own exit timeout + a margin.

    bootout's exit status is no answer (0 or 36 while the job still stops, 3 or 113 when
    it was already gone): the job is out when print says so. launchd waits the job's
    ExitTimeOut after SIGTERM before its SIGKILL (colima 120 s, the images worker 90 s),
    so a fixed wait fails a stop that is going normally: the limit is read from launchd.
    """
    t = shlex.quote(target)
    return (
        f"limit=$(( $({exit_timeout_command(target)}) + {BOOTOUT_MARGIN} )); "
        f"out=$(launchctl bootout {t} 2>&1); rc=$?; i=0; "
        f"while launchctl print {t} >/dev/null 2>&1; do "
        'if [ "$i" -ge "$limit" ]; then '
        f'echo "{target} is still loaded ${{limit}}s after launchctl bootout '
        f'(its exit timeout + {BOOTOUT_MARGIN}s; exit $rc: $out)" >&2; exit 1; fi; '
        f"i=$((i + 1)); sleep 1; done"
    )


def restart_command(label: str, agent: Agent | None = None) -> str:
    """POSIX sh: restart a loaded job as the converge does (bootout, wait, bootstrap its plist)."""
    return f"{{ {stop_command(label, agent)}; }} && {{ {start_command(label, agent)}; }}"


def stop_command(label: str, agent: Agent | None = None) -> str:
    """POSIX sh: stop a loaded job as the converge does (bootout, and wait until launchd lets it go)."""
    return _bootout(target_of(label, agent))


def start_command(label: str, agent: Agent | None = None) -> str:
    """POSIX sh: load a job from its plist again (bootstrap), as the converge does."""
    return _bootstrap(domain_of(agent), plist_path(label, agent), target_of(label, agent), 60)


def _bootstrap(job_domain: str, path: str, target: str, timeout: int) -> str:
    # bootstrap fails with 5 (EIO) or 37 while a booted-out job settles, and
    # may fail although the job did load: retry, and trust print.
    d, p, t = shlex.quote(job_domain), shlex.quote(path), shlex.quote(target)
    return (
        f"i=0; until out=$(launchctl bootstrap {d} {p} 2>&1); do "
        f"if launchctl print {t} >/dev/null 2>&1; then break; fi; "
        f'if [ "$i" -ge {int(timeout)} ]; then '
        f'echo "launchctl bootstrap of {target} did not load it in {int(timeout)}s: $out" >&2; exit 1; fi; '
        f"i=$((i + 1)); sleep 1; done"
    )


def crash_check(program: Program) -> str:
    """POSIX sh: exit non-zero, printing launchd's view, when the job is not running after it exited.

    Between a crash and the next spawn (ThrottleInterval) `launchctl print` says
    `state = not running` with the exit code or signal: a crash-looping job spends
    nearly all its time there. A job that has not exited yet is still starting;
    SIGTERM is how a bootout ended its predecessor, not a crash.
    """
    t = shlex.quote(target_of(program.label, program.agent))
    return (
        f"out=$(launchctl print {t} 2>&1) || {{ echo launchd: {t} is not loaded; exit 1; }}; "
        'field() { printf \'%s\\n\' "$out" | sed -n "s/^[[:space:]]*$1 = //p" | head -n 1; }; '
        'state=$(field state); [ "$state" = running ] && exit 0; '
        "code=$(field 'last exit code'); sig=$(field 'last terminating signal'); "
        "case $sig in Terminated*) sig= ;; esac; "
        'case $code in "" | 0 | "(never exited)") [ -z "$sig" ] && exit 0 ;; esac; '
        'echo "launchd: state = $state, last exit code = ${code:-none}${sig:+, signal $sig}, runs = $(field runs)"; '
        "exit 1"
    )


def rollback(program: Program, decision: Decision, record: str) -> list[str] | None:
    """Commands that put back what the job ran before this converge's (re)start; None: nothing to go back to."""
    agent = program.agent
    target, domain, path = target_of(program.label, agent), domain_of(agent), plist_path(program.label, agent)
    if decision.action == "reload":
        kept, dest = shlex.quote(previous_definition(record)), shlex.quote(path)
        owner = shlex.quote(agent.user) if agent else "root:wheel"
        return [
            _bootout(target),
            f"mv -f {kept} {dest} && chown {owner} {dest} && chmod 644 {dest}",
            _bootstrap(domain, path, target, 60),
            restore_record(record),
        ]
    if decision.action == "restart" and restore_links(record, program.inputs, decision.changed):
        # As the restart itself: bootout (SIGTERM, its ExitTimeOut), bootstrap; never kickstart -k.
        return [_bootout(target), _bootstrap(domain, path, target, 60), restore_record(record)]
    return None
