"""launchd jobs on macOS: the plist of a model server, a fact, and an idempotent operation.

pyinfra's own `launchd.service` only runs the legacy `launchctl start/stop`
on the caller's domain. This module uses the modern verbs on an explicit
domain, the way nix-darwin does: render the plist, compare it with the one
installed, and reload only on a difference.

    plist change         -> bootout, write plist, bootstrap
    inputs change only   -> kickstart -k (same plist, new binary or model)
    not loaded           -> write plist, bootstrap
    disabled override    -> enable
    removed              -> bootout, delete plist

launchctl quirks handled (seen in the wild, see the report of issue 6):
- `bootout` returns before the job is gone (exit 0, or 36 "Operation now in
  progress" while it stops): wait until `launchctl print` no longer finds it.
- `bootstrap` fails with 5 "Input/output error" (or 37) while a booted-out
  job still settles, and can exit non-zero although the job did load: retry,
  and believe `launchctl print`.
"""

from __future__ import annotations

import re
import shlex
from hashlib import sha1
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from pyinfra import host
from pyinfra.api import FactBase, operation
from pyinfra.api.exceptions import OperationError
from pyinfra.facts.files import Sha1File
from pyinfra.operations import files

from tasks import server_args

if TYPE_CHECKING:
    from tasks.config import KittyConfig, ModelServer

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
DAEMONS_DIR = "/Library/LaunchDaemons"
# `launchctl print` exits 113 for a job the domain does not have.
NOT_FOUND = 113
EXIT_MARKER = "kitty-launchctl-exit="
# Characters XML 1.0 cannot carry at all, escaped or not.
XML_INVALID = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


# --- The plist -----------------------------------------------------------


def label(cfg: KittyConfig, name: str) -> str:
    return f"{cfg.launchd.label_prefix}{name}"


def domain(kind: str, uid: int | None = None) -> str:
    """`system` for a LaunchDaemon; `gui/<uid>` for a LaunchAgent of that user."""
    if kind == "daemon":
        return "system"
    if uid is None:
        raise ValueError("a LaunchAgent needs the uid of its user (domain gui/<uid>)")
    return f"gui/{uid}"


def plist_path(job_label: str, kind: str, home: str | None = None) -> str:
    if kind == "daemon":
        return f"{DAEMONS_DIR}/{job_label}.plist"
    if not home:
        raise ValueError("a LaunchAgent plist lives in its user's home: pass home")
    return f"{home.rstrip('/')}/Library/LaunchAgents/{job_label}.plist"


def log_path(cfg: KittyConfig, name: str) -> str:
    # The manual's names: .logs/llamacpp-q4.log, ...
    return f"{cfg.paths.logs_dir}/llamacpp-{name}.log"


def render_plist(
    *,
    job_label: str,
    arguments: list[str],
    working_directory: str,
    log: str,
    environment: dict[str, str],
    throttle_interval: int,
    user: str | None = None,
    group: str | None = None,
) -> str:
    """The plist text. `user` only for a LaunchDaemon: an agent runs as its GUI user."""
    values = [job_label, working_directory, log, user or "", group or "", *arguments, *environment.items()]
    bad = [value for value in values if XML_INVALID.search(str(value))]
    if bad:
        raise ValueError(f"launchd job {job_label}: {bad[0]!r} has a control character a plist cannot hold")
    template = _templates().get_template("llama-server.plist.j2")
    return template.render(
        label=job_label,
        arguments=arguments,
        working_directory=working_directory,
        log_path=log,
        environment=environment,
        throttle_interval=throttle_interval,
        user=user,
        group=group,
    )


def server_plist(
    cfg: KittyConfig,
    name: str,
    server: ModelServer,
    *,
    binary: str,
    user: str | None,
    working_directory: str | None = None,
) -> str:
    """The plist of model server `name`: its llama-server argv, the manual's log file."""
    return render_plist(
        job_label=label(cfg, name),
        arguments=server_args.arguments(cfg, name, server, binary, cfg.paths.models_dir),
        # A folder the deploy owns: launchd will not start a job whose
        # WorkingDirectory is missing, and the app checkout may not be here.
        working_directory=working_directory or cfg.paths.opt_dir,
        log=log_path(cfg, name),
        environment=dict(server.env),
        throttle_interval=cfg.launchd.throttle_interval,
        user=user if cfg.launchd.kind == "daemon" else None,
    )


def _templates() -> jinja2.Environment:
    # The template escapes each value itself (`| e`), so it is safe whatever
    # environment renders it; StrictUndefined makes a missing value an error.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
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


@operation()
def job(
    job_label: str,
    plist: str | None = None,
    job_domain: str = "system",
    path: str | None = None,
    inputs: str | None = None,
    inputs_path: str | None = None,
    owner: str = "root",
    group: str = "wheel",
    present: bool = True,
    timeout: int = 60,
):
    """Converge one launchd job.

    + job_label: the job's Label
    + plist: the plist text (from `server_plist`); required when present
    + job_domain: `system` (LaunchDaemon) or `gui/<uid>` (LaunchAgent)
    + path: where the plist lives; default /Library/LaunchDaemons/<label>.plist
    + inputs: what else the running process depends on (binary build, model
      files), as one string; when it differs from the one recorded at
      `inputs_path`, a loaded job is restarted with `kickstart -k`
    + owner/group: of the plist (LaunchDaemon: root:wheel, or launchd refuses it)
    + present: False boots the job out and deletes its plist (and inputs record)
    + timeout: seconds to wait for launchd to drop or load the job
    """
    if path is None:
        if job_domain != "system":
            raise OperationError(f"launchd job {job_label}: a {job_domain} job needs its plist path")
        path = plist_path(job_label, "daemon")
    target = f"{job_domain}/{job_label}"
    status = host.get_fact(LaunchdJob, target=target)
    if status["error"]:
        raise OperationError(f"launchctl print {target} failed ({status['error']}): cannot tell if it is loaded")

    if not present:
        commands = [_bootout(target, timeout)] if status["loaded"] else []
        commands += list(files.file._inner(path=path, present=False))
        if inputs_path:
            commands += list(files.file._inner(path=inputs_path, present=False))
        if not commands:
            host.noop(f"launchd job {target} is absent")
        yield from commands
        return

    if plist is None:
        raise OperationError(f"launchd job {job_label}: present=True needs the plist text")
    if (inputs is None) != (inputs_path is None):
        raise OperationError(f"launchd job {job_label}: inputs and inputs_path go together")
    plist_changed = host.get_fact(Sha1File, path=path) != _sha1(plist)
    inputs_record = None if inputs is None else f"{inputs}\n"
    inputs_changed = inputs_record is not None and host.get_fact(Sha1File, path=inputs_path) != _sha1(inputs_record)
    loaded = status["loaded"]

    commands = []
    # Out before the new plist is written: if anything fails in between, the
    # next converge sees "not loaded" and bootstraps, instead of seeing a plist
    # on disk that matches and keeping the old job loaded.
    if loaded and plist_changed:
        commands.append(_bootout(target, timeout))
    commands += list(files.put._inner(src=StringIO(plist), dest=path, user=owner, group=group, mode="644"))
    # A disabled override makes bootstrap fail, and keeps the job off after a reboot.
    if status["disabled"]:
        commands.append(f"launchctl enable {shlex.quote(target)}")
    if not loaded or plist_changed:
        commands.append(_bootstrap(job_domain, path, target, timeout))
    elif inputs_changed:
        # Same plist, new binary or model: restart in place, no unload race.
        commands.append(f"launchctl kickstart -k {shlex.quote(target)}")
    # Recorded after the restart, so a failed restart is retried next time.
    if inputs_record is not None:
        commands += list(files.put._inner(src=StringIO(inputs_record), dest=inputs_path, user=owner, mode="644"))

    if not commands:
        host.noop(f"launchd job {target} is loaded and up to date")
    yield from commands


def _sha1(text: str) -> str:
    return sha1(text.encode()).hexdigest()


def _bootout(target: str, timeout: int) -> str:
    # bootout's exit status is no answer (0 or 36 while the job still stops,
    # 3 or 113 when it was already gone): the job is out when print says so.
    t = shlex.quote(target)
    return (
        f"out=$(launchctl bootout {t} 2>&1); rc=$?; i=0; "
        f"while launchctl print {t} >/dev/null 2>&1; do "
        f'if [ "$i" -ge {int(timeout)} ]; then '
        f'echo "{target} is still loaded {int(timeout)}s after launchctl bootout (exit $rc: $out)" >&2; exit 1; fi; '
        f"i=$((i + 1)); sleep 1; done"
    )


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


@operation()
def kickstart(job_label: str, job_domain: str = "system"):
    """Restart a loaded job in place (`kickstart -k`): for inputs that changed during this run."""
    yield f"launchctl kickstart -k {job_domain}/{job_label}"
