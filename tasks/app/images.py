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

import shlex

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.facts.files import File
from pyinfra.operations import pip

from tasks import supervise
from tasks.app import checkout
from tasks.config import KittyConfig
from tasks.engine import operations
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.supervise import Family, Health, Input, Program, Slot, health

PROGRAMS = ("worker", "api")
FAMILY = Family("images service", layout.IMAGES_LABEL_PREFIX, layout.IMAGES_UNIT_PREFIX)
# Recorded in the venv after a successful install, so a new venv installs again.
RECORD = ".kitty-requirements.sha256"
# Logs as they come, not in 8 KiB blocks: the log is all an operator has.
ENVIRONMENT = {"PYTHONUNBUFFERED": "1"}


def health_url(cfg: KittyConfig) -> str:
    return f"http://127.0.0.1:{cfg.images.port}/"


def programs(
    cfg: KittyConfig, plat: Platform, venv_replaced: bool = False, checkout_moved: bool = False
) -> list[Program]:
    """The RQ worker and the uvicorn API, as supervised programs.

    Their inputs: the requirements installed in the venv (its record), and the
    commit the app checkout is at (detached: .git/HEAD holds the commit).
    """
    images, venv = cfg.images, layout.images_venv(cfg)
    redis_port = cfg.stack.services[images.redis_service].port
    inputs = (
        Input("venv requirements", f"{venv}/{RECORD}", "file", replaced=venv_replaced),
        Input("app checkout", layout.app_head(cfg), "file", replaced=checkout_moved),
    )
    common = {
        "working_directory": layout.images_dir(cfg),
        # The checkout's owner (tasks/app/stack.py): the venv lives in it, the services run as it.
        "user": layout.service_user(cfg, plat),
        "env": dict(ENVIRONMENT),
        "restart_delay": cfg.launchd.throttle_interval,
        # Redis is a container of the application stack: after the local engine when it
        # is a unit here (After= pulls nothing in); Restart= covers the time Redis needs.
        "after": ("docker.service",),
        "inputs": inputs,
    }
    return [
        Program(
            name="images worker",
            label=layout.images_label("worker"),
            unit=layout.images_unit("worker"),
            description=f"KITTY images service: RQ worker (queue {images.queue})",
            argv=[f"{venv}/bin/rq", "worker", images.queue, "--url", f"redis://127.0.0.1:{redis_port}/0"],
            log=layout.images_log(cfg, "worker"),
            # The worker finishes the image it is generating (30-60 s) before it exits.
            stop_timeout=90,
            kill_main_only=True,
            **common,
        ),
        Program(
            name="images api",
            label=layout.images_label("api"),
            unit=layout.images_unit("api"),
            description=f"KITTY images service: uvicorn API on port {images.port}",
            argv=[f"{venv}/bin/uvicorn", "main:app", "--host", "127.0.0.1", "--port", str(images.port)],
            log=layout.images_log(cfg, "api"),
            stop_timeout=30,
            health=Health(health_url(cfg), "http", images.health_timeout),
            **common,
        ),
    ]


@deploy("Images service")
def run(cfg: KittyConfig, plat: Platform) -> None:
    """Converge the images service: it restarts when its definition, its venv or the app checkout it runs from
    changes in this converge (the checkout's own test: tasks/app/checkout.py `moves`)."""
    if not cfg.images.enabled:
        # Disabled: both services stopped and their units/plists gone; the venv stays (slow to rebuild).
        slots = [Slot(layout.images_label(p), layout.images_unit(p), None, f"images {p}") for p in PROGRAMS]
        supervise.converge(cfg, plat, slots, FAMILY)
        return
    owner = layout.service_user(cfg, plat)
    as_owner = {"_sudo": True, "_sudo_user": owner} if owner != plat.user else {}
    moved = checkout.moves(cfg, plat)
    installs = _venv(cfg, plat, as_owner, moved)
    running = programs(cfg, plat, venv_replaced=installs, checkout_moved=moved)
    slots = [Slot(p.label, p.unit, p) for p in running]
    decisions = supervise.converge(cfg, plat, slots, FAMILY)
    health.wait(cfg, plat, running, decisions, "the images API")


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


def _venv(cfg: KittyConfig, plat: Platform, as_owner: dict, checkout_moves: bool) -> bool:
    """The venv and its requirements; True when this run installs them (the programs then restart)."""
    venv = layout.images_venv(cfg)
    requirements = f"{layout.images_dir(cfg)}/{cfg.images.requirements}"
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
    if in_step and not checkout_moves:
        return created.will_change
    install_requirements(
        name=f"Install the images service's {cfg.images.requirements} (pip)",
        venv=venv,
        requirements=requirements,
        **as_owner,
    )
    # In step now: only a checkout that moves in this run can bring new requirements.
    return True


@operation()
def install_requirements(venv: str, requirements: str):
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
    yield operations.StreamedCommand(shlex.join(["sh", "-c", script]), {})
