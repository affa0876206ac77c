"""The manual's optional images service (phase 5): a venv, an RQ worker and a uvicorn API, supervised.

    venv      <kitty_root>/<images.path>/.venv, made once (`python3 -m venv`)
    pip       `pip install -r requirements.txt` only when the file's sha256
              differs from the one recorded after the last install
    worker    `.venv/bin/rq worker images --url redis://127.0.0.1:<redis port>/0`
    api       `.venv/bin/uvicorn main:app --host 127.0.0.1 --port <port>`

Both run as the service user, as systemd units on Linux or LaunchDaemons on
macOS, and restart only when their unit/plist, the venv or the app checkout
changed; then the deploy waits for the API's `GET /`. Disabled: both are
stopped and removed (the venv stays: it belongs to the checkout and is slow
to rebuild). Replaces start-images-service.sh, its `&` and its PID files.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from pathlib import Path

import jinja2
from pyinfra import host
from pyinfra.api import FactBase, FunctionCommand, StringCommand, deploy, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File, Sha1File
from pyinfra.operations import pip
from pyinfra.operations.util import any_changed

from tasks import launchd, operations, systemd_unit
from tasks.config import KittyConfig
from tasks.platform import Platform

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
UNIT_DIR = systemd_unit.UNIT_DIR
LABEL_PREFIX = "com.kitty.images."
PROGRAMS = ("worker", "api")
# Recorded in the venv after a successful install, so a new venv installs again.
RECORD = ".kitty-requirements.sha256"
# Logs as they come, not in 8 KiB blocks: the log is all an operator has.
ENVIRONMENT = {"PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class Program:
    name: str
    description: str
    arguments: list[str]
    log: str
    # Seconds a stop may take: the worker finishes the image it is generating (30-60 s).
    stop_timeout: int


def app_dir(cfg: KittyConfig) -> str:
    return f"{cfg.paths.kitty_root}/{cfg.images.path}"


def venv_dir(cfg: KittyConfig) -> str:
    return f"{app_dir(cfg)}/.venv"


def unit_name(program: str) -> str:
    return f"kitty-images-{program}.service"


def label(program: str) -> str:
    return f"{LABEL_PREFIX}{program}"


def health_url(cfg: KittyConfig) -> str:
    return f"http://127.0.0.1:{cfg.images.port}/"


def programs(cfg: KittyConfig) -> list[Program]:
    images, venv, logs = cfg.images, venv_dir(cfg), cfg.paths.logs_dir
    redis_port = cfg.stack.services[images.redis_service].port
    return [
        Program(
            name="worker",
            description=f"RQ worker (queue {images.queue})",
            arguments=[f"{venv}/bin/rq", "worker", images.queue, "--url", f"redis://127.0.0.1:{redis_port}/0"],
            # The manual's log names: .logs/rq_worker.log and .logs/service.log.
            log=f"{logs}/rq_worker.log",
            stop_timeout=90,
        ),
        Program(
            name="api",
            description=f"uvicorn API on port {images.port}",
            arguments=[f"{venv}/bin/uvicorn", "main:app", "--host", "127.0.0.1", "--port", str(images.port)],
            log=f"{logs}/service.log",
            stop_timeout=30,
        ),
    ]


def _owner(cfg: KittyConfig, plat: Platform) -> str:
    # The checkout's owner (tasks/stack.py): the venv lives in it, the services run as it.
    return cfg.paths.service_user or plat.user


def render_unit(cfg: KittyConfig, plat: Platform, program: Program) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    return env.get_template("images-service.service.j2").render(
        description=program.description,
        user=_owner(cfg, plat),
        working_directory=app_dir(cfg),
        arguments=program.arguments,
        environment=ENVIRONMENT,
        restart_sec=cfg.launchd.throttle_interval,
        log_path=program.log,
        stop_timeout=program.stop_timeout,
    )


def render_plist(cfg: KittyConfig, plat: Platform, program: Program) -> str:
    # A LaunchDaemon whatever kitty_launchd.kind says: an agent needs a GUI login (as colima).
    return launchd.render_plist(
        job_label=label(program.name),
        arguments=program.arguments,
        working_directory=app_dir(cfg),
        log=program.log,
        environment=ENVIRONMENT,
        throttle_interval=cfg.launchd.throttle_interval,
        user=_owner(cfg, plat),
    )


@deploy("Images service")
def run(cfg: KittyConfig, plat: Platform, app_changes: list[OperationMeta] | None = None) -> None:
    """Converge the images service; `app_changes`: operations that, if they change anything, moved the checkout."""
    if not cfg.images.enabled:
        _remove(plat)
        return
    owner = _owner(cfg, plat)
    as_owner = {"_sudo": True, "_sudo_user": owner} if owner != plat.user else {}
    app_changes = list(app_changes or [])
    inputs = _venv(cfg, plat, as_owner, app_changes) + app_changes
    started = {}
    for program in programs(cfg):
        if plat.supervisor == "systemd":
            started[program.name] = _systemd_program(cfg, plat, program, inputs)
        else:
            started[program.name] = _launchd_program(cfg, plat, program, inputs)
    api = programs(cfg)[1]
    api_answers(
        name="Wait for the images API (GET /)",
        url=health_url(cfg),
        timeout=cfg.images.health_timeout,
        log=api.log,
        # Not (re)started in this run: nothing to wait for, a converged host plans nothing.
        _if=any_changed(*started["api"]),
    )


# --- The venv and its requirements ------------------------------------------------


class Requirements(FactBase[dict]):
    """The sha256 of the requirements file now, and the one recorded after the last install.

    {"file": "ab12..." or None (no file), "installed": "ab12..." or None (never installed)}
    """

    def command(self, requirements: str, record: str) -> str:
        r = shlex.quote(requirements)
        return (
            f"echo file $( (sha256sum {r} 2>/dev/null || shasum -a 256 {r} 2>/dev/null) | cut -d' ' -f1); "
            f"echo installed $(cat {shlex.quote(record)} 2>/dev/null)"
        )

    @staticmethod
    def default() -> dict:
        return {"file": None, "installed": None}

    def process(self, output) -> dict:
        found = self.default()
        for line in output:
            key, _, value = line.strip().partition(" ")
            if key in found:
                found[key] = value.strip() or None
        return found


def _venv(cfg: KittyConfig, plat: Platform, as_owner: dict, app_changes: list[OperationMeta]) -> list[OperationMeta]:
    """The venv and its requirements; returns the operations that, if they change anything, changed the venv."""
    venv = venv_dir(cfg)
    requirements = f"{app_dir(cfg)}/{cfg.images.requirements}"
    had_venv = bool(host.get_fact(File, path=f"{venv}/bin/activate"))
    created = pip.virtualenv(
        name=f"Images service venv ({cfg.images.python} -m venv)",
        path=venv,
        python=cfg.images.python,
        venv=True,
        _env=plat.env,
        **as_owner,
    )
    state = host.get_fact(Requirements, requirements=requirements, record=f"{venv}/{RECORD}")
    in_step = had_venv and state["file"] is not None and state["file"] == state["installed"]
    if in_step and not app_changes:
        return [created]
    installed = install_requirements(
        name=f"Install the images service's {cfg.images.requirements} (pip)",
        venv=venv,
        requirements=requirements,
        as_owner=as_owner,
        # In step now: only a checkout that moves in this run can bring new requirements.
        _if=any_changed(*app_changes) if in_step else None,
    )
    return [created, installed]


@operation()
def install_requirements(venv: str, requirements: str, as_owner: dict):
    """`pip install -r`, its output shown as it comes (big wheels take minutes), then the file's sha256 recorded.

    The file is hashed again on the host: planned because the checkout moves,
    it installs nothing when the requirements stayed the same.
    """
    script = (
        f"r={shlex.quote(requirements)}; rec={shlex.quote(f'{venv}/{RECORD}')}; "
        '[ -f "$r" ] || { echo "$r: no such file (kitty_images.requirements)" >&2; exit 1; }; '
        'h=$(sha256sum "$r" 2>/dev/null || shasum -a 256 "$r") && h=${h%% *} && '
        '{ [ "$h" = "$(cat "$rec" 2>/dev/null)" ] || '
        f'{{ {shlex.quote(f"{venv}/bin/pip")} install --disable-pip-version-check -r "$r" && echo "$h" > "$rec"; }}; }}'
    )
    yield FunctionCommand(operations.stream, (shlex.join(["sh", "-c", script]), {}), as_owner)


# --- The two services ------------------------------------------------------------------


def _systemd_program(
    cfg: KittyConfig, plat: Platform, program: Program, inputs: list[OperationMeta]
) -> list[OperationMeta]:
    text = render_unit(cfg, plat, program)
    label = f"images {program.name}"
    return systemd_unit.converge(label, unit_name(program.name), text, plat, inputs, "unit, venv or checkout changed")


def _launchd_program(
    cfg: KittyConfig, plat: Platform, program: Program, inputs: list[OperationMeta]
) -> list[OperationMeta]:
    job_label = label(program.name)
    plist = render_plist(cfg, plat, program)
    status = host.get_fact(launchd.LaunchdJob, target=f"system/{job_label}")
    path = launchd.plist_path(job_label, "daemon")
    # launchd.job bootstraps a job that is not loaded or whose plist differs:
    # a fresh process, so a kickstart on top would only restart it again.
    reloads = not status["loaded"] or host.get_fact(Sha1File, path=path) != hashlib.sha1(plist.encode()).hexdigest()
    job = launchd.job(
        name=f"images {program.name}: launchd job {job_label}", job_label=job_label, plist=plist, _sudo=plat.sudo
    )
    if reloads:
        return [job]
    kicked = launchd.kickstart(
        name=f"images {program.name}: restart (venv or checkout changed)",
        job_label=job_label,
        _if=any_changed(*inputs),
        _sudo=plat.sudo,
    )
    return [job, kicked]


def _remove(plat: Platform) -> None:
    """Disabled: both services stopped and their units/plists gone; nothing planned when they already are."""
    for program in PROGRAMS:
        if plat.supervisor == "launchd":
            launchd.job(
                name=f"images {program}: remove launchd job", job_label=label(program), present=False, _sudo=plat.sudo
            )
            continue
        systemd_unit.remove(f"images {program}", unit_name(program), plat)


# --- Health -------------------------------------------------------------------------------


@operation()
def api_answers(url: str, timeout: int, log: str):
    """Wait, on the host, until `GET url` answers 2xx; on a timeout, fail with the tail of the API's log."""
    yield StringCommand(
        f"i=0; until curl -fsS -o /dev/null --max-time 5 {shlex.quote(url)} 2>/dev/null; do "
        f'if [ "$i" -ge {int(timeout)} ]; then '
        f"echo {shlex.quote(f'images API not healthy at {url} after {int(timeout)}s; last lines of {log}:')} >&2; "
        f"tail -n 20 {shlex.quote(log)} >&2; exit 1; fi; "
        "i=$((i + 2)); sleep 2; done"
    )
