"""Stopping supervised programs, and keeping them stopped across a reboot until the next converge.

    launchd   disable system/<label> (nothing loads it at boot), bootout: launchd sends
              SIGTERM, waits the plist's ExitTimeOut, then SIGKILL
              emergency: disable, bootout (launchd lets go of it: no KeepAlive respawn),
              then SIGKILL to what is left, by the PID the job had
    systemd   disable --now: SIGTERM, TimeoutStopSec, then SIGKILL
              emergency: disable, kill -s SIGKILL, stop

The plist or unit and the record of what the process was started with stay
on the host: the next converge finds "defined, not running" and decides
"start" (launchd: enable, bootstrap; systemd: enable --now), the row of the
decision table that exists for this. Only kitty-ops' own labels and units
are touched, by name, through the supervisor: never a process by its name.

A stop is decided from facts (loaded / active, enabled at boot): a program
already stopped and disabled plans nothing, so a second stop.py changes
nothing. What each stop found (stopped within its timeout, or killed at it)
is kept for the table at the end of stop.py (`outcomes`).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, Host, operation
from pyinfra.api.exceptions import OperationError
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus

from tasks.engine import run_record
from tasks.engine.operations import connector_arguments
from tasks.host.platform import Platform
from tasks.supervise.launchd import DOMAIN, LaunchdJob, exit_timeout_command
from tasks.supervise.program import Agent, Family

MARK = "kitty-stop"
# Seconds to wait, beyond the program's own stop timeout, for the supervisor to let it go.
GRACE = 15
# The job's PID in `launchctl print`, for sed -n.
PID_LINE = r"s/^[[:space:]]*pid = \([0-9][0-9]*\).*/\1/p"


@dataclass(frozen=True)
class Target:
    """A supervised program on the host, by its names: `name` for people, `label` (launchd) / `unit` (systemd)."""

    name: str
    label: str
    unit: str
    # The program's stop timeout when declared; None: read from its plist/unit on the host.
    stop_timeout: int | None = None
    # launchd's domain: `system` (a LaunchDaemon) or a GUI session's `gui/<uid>` (a LaunchAgent).
    domain: str = DOMAIN


@dataclass(frozen=True)
class Outcome:
    name: str
    # "stopped", "killed" (still running at its stop timeout), "force-killed" (emergency),
    # "already stopped", "disabled at boot" (was not running, only kept from starting at boot).
    result: str
    seconds: float | None = None


def outcomes(on: Host) -> list[Outcome]:
    """What the stops of this run found on the host, in the order they were noted."""
    return list(_found(on).values())


def _found(on: Host) -> dict[str, Outcome]:
    return run_record.kept(on, "stop: supervised programs")


def targets(plat: Platform, names: list[str], who, agent: Agent | None = None) -> list[Target]:
    """The programs `names` (labels or units, as control.installed found them) as targets; `who(name)`
    names each for people; `agent`: they are LaunchAgents in that GUI session."""
    if plat.supervisor == "launchd":
        domain = agent.domain if agent else DOMAIN
        return [Target(who(name), name, "", domain=domain) for name in names]
    return [Target(who(name), "", name) for name in names]


def short_name(plat: Platform, family: Family, name: str) -> str:
    """A label or unit of `family` without the family's prefix: `q4` of kitty-llama-q4.service."""
    prefix = family.label_prefix if plat.supervisor == "launchd" else family.unit_prefix
    return name[len(prefix) :].removesuffix(".service")


def stop(plat: Platform, targets: list[Target], *, emergency: bool) -> None:
    """One operation per target, in the order given (the manual's: images API before its worker, ...)."""
    sudo = plat.sudo
    for target in targets:
        verb = "kill" if emergency else "stop"
        if plat.supervisor == "launchd":
            job_stopped(
                name=f"{target.name}: {verb} and keep off at boot ({target.label})",
                target=target,
                emergency=emergency,
                sudo=sudo,
                _sudo=sudo,
            )
        else:
            unit_stopped(
                name=f"{target.name}: {verb} and keep off at boot ({target.unit})",
                target=target,
                emergency=emergency,
                sudo=sudo,
                _sudo=sudo,
            )


@operation()
def job_stopped(target: Target, emergency: bool = False, sudo: bool = False):
    """A LaunchDaemon stopped and disabled; its plist stays.

    + target: the program's names
    + emergency: SIGKILL now, no stop timeout
    + sudo: run the stop as root (a FunctionCommand is not given the operation's _sudo)
    """
    service = f"{target.domain}/{target.label}"
    status = host.get_fact(LaunchdJob, target=service)
    if status["error"]:
        raise OperationError(f"launchctl print {service} failed ({status['error']}): cannot tell if it runs")
    if not status["loaded"] and status["disabled"]:
        host.noop(f"{service} is not loaded and disabled at boot")
        _note(host, Outcome(target.name, "already stopped"))
        return
    quoted = shlex.quote(service)
    steps = [f"launchctl disable {quoted}"]
    if status["loaded"]:
        steps.append(_bootout_timed(service, target, emergency))
    yield FunctionCommand(_run_stop, (target.name, _chain(steps), status["loaded"], emergency, sudo), {})


def _bootout_timed(service: str, target: Target, emergency: bool) -> str:
    """bootout, then wait until print no longer finds it; print `kitty-stop SECONDS TIMEOUT`.

    launchd itself sends SIGKILL at the plist's ExitTimeOut: a stop that lasted
    that long was a kill. bootout returns before the job is gone (exit 0 or 36).
    Emergency: bootout first (launchd drops the job, so KeepAlive cannot respawn it),
    then SIGKILL what is left, by the PID the job had: never a kill while it is loaded.
    """
    t = shlex.quote(service)
    declared = target.stop_timeout
    timeout = str(int(declared)) if declared is not None else f"$({exit_timeout_command(service)})"
    steps = [f"timeout={timeout}", "start=$(date +%s)"]
    if emergency:
        steps.append(f"pid=$(launchctl print {t} 2>/dev/null | sed -n {shlex.quote(PID_LINE)} | head -n 1)")
    steps.append(f"launchctl bootout {t} >/dev/null 2>&1")
    if emergency:
        steps.append('if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi')
    steps += [
        "i=0",
        f"while launchctl print {t} >/dev/null 2>&1; do "
        f'if [ "$i" -ge $(($timeout + {GRACE})) ]; then echo "{service} still loaded after bootout" >&2; exit 1; fi; '
        "i=$((i + 1)); sleep 1; done",
        f'echo "{MARK} $(($(date +%s) - start)) {"0" if emergency else "$timeout"}"',
    ]
    return "; ".join(steps)


@operation()
def unit_stopped(target: Target, emergency: bool = False, sudo: bool = False):
    """A systemd unit stopped and disabled; its unit file stays.

    + target: the program's names
    + emergency: SIGKILL now, no stop timeout
    + sudo: run the stop as root (a FunctionCommand is not given the operation's _sudo)
    """
    unit = target.unit
    active = bool((host.get_fact(SystemdStatus, services=unit) or {}).get(unit))
    enabled = bool((host.get_fact(SystemdEnabled, services=unit) or {}).get(unit))
    if not active and not enabled:
        host.noop(f"{unit} is stopped and disabled at boot")
        _note(host, Outcome(target.name, "already stopped"))
        return
    quoted = shlex.quote(unit)
    if emergency:
        steps = [
            f"systemctl disable {quoted} >/dev/null 2>&1",
            f"start=$(date +%s); systemctl kill -s SIGKILL {quoted} 2>/dev/null || true",
            f"systemctl stop {quoted}",
            f'echo "{MARK} $(($(date +%s) - start)) 0"',
        ]
    else:
        # systemd records how the last stop ended: Result=timeout when it had to SIGKILL.
        steps = [
            f"start=$(date +%s); systemctl disable --now {quoted} >/dev/null 2>&1",
            f'result=$(systemctl show -p Result --value {quoted}); echo "{MARK} $(($(date +%s) - start)) $result"',
        ]
    yield FunctionCommand(_run_stop, (target.name, _chain(steps), active, emergency, sudo), {})


def _chain(steps: list[str]) -> str:
    """Each step in braces: a step's own `;` and `||` never reach into the next."""
    return " && ".join(f"{{ {step}; }}" for step in steps)


def _run_stop(state, host, name: str, command: str, was_running: bool, emergency: bool, sudo: bool) -> bool:
    """Run the stop on the host and keep what it found for the table (FunctionCommand target)."""
    # With the operation's own connector arguments: its sudo password, as every command of the run.
    ok, output = host.run_shell_command(command, **connector_arguments(host, _sudo=sudo))
    if not ok:
        for line in output.stderr_lines[-5:]:
            host.log_styled(line, fg="red", log_func=logger.error)
        _note(host, Outcome(name, "failed to stop"))
        return False
    seconds, killed = _parse(output.stdout_lines)
    if not was_running:
        result = "disabled at boot"
    elif emergency:
        result = "force-killed"
    else:
        result = "killed" if killed else "stopped"
    if result == "killed":
        host.log_styled(f"{name}: still running at its stop timeout, killed by the supervisor", fg="yellow",
                        log_func=logger.warning)  # fmt: skip
    _note(host, Outcome(name, result, seconds))
    return True


def _parse(lines: list[str]) -> tuple[float | None, bool]:
    """(seconds the stop took, whether the supervisor had to SIGKILL) from the `kitty-stop` line."""
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == MARK and parts[1].isdigit():
            seconds = float(parts[1])
            detail = parts[2] if len(parts) > 2 else ""
            if detail.isdigit():
                # launchd: killed when the stop took its whole ExitTimeOut (0: an emergency, not a timeout).
                return seconds, int(detail) > 0 and seconds >= int(detail)
            return seconds, detail == "timeout"
    return None, False


def _note(on: Host, outcome: Outcome) -> None:
    # Planning and executing both evaluate an operation: keep one outcome per program, the latest.
    found = _found(on)
    found.pop(outcome.name, None)
    found[outcome.name] = outcome
