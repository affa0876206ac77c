"""The container runtime the application stack runs on, and how to talk to it.

    macOS   colima, run by a LaunchDaemon as the admin (no GUI login needed), or
            Docker Desktop / OrbStack, which the deploy only checks (they need a GUI login)
    Linux   docker.io from apt with its systemd unit, or an engine that already
            answers ("external": the package's own engine units are masked)

Every runtime ends the same way: `docker info` must answer before compose runs.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, systemd

from tasks import supervise
from tasks.config import KittyConfig, Stack
from tasks.engine import host_file, templates
from tasks.host import layout
from tasks.host.layout import COLIMA_LABEL
from tasks.host.platform import Platform
from tasks.supervise import Program, Slot
from tasks.system import prerequisites

# Runtimes each OS can use; the first is what "auto" means there.
# What colima needs from Homebrew: the VM, the docker CLI, compose v2 and buildx. Without
# buildx compose falls back to the classic builder, which fails on `RUN --mount`; the CLI
# finds Homebrew's plugins through ~/.docker/config.json (compose.brew_plugins_found).
COLIMA_FORMULAE = ("colima", "docker", "docker-compose", "docker-buildx")
# The package's own engine never runs where the engine is external: its units point at /dev/null.
ENGINE_UNITS = ("docker.service", "docker.socket", "containerd.service")


class Engine:
    """How to reach the engine on this host: the environment and whether it takes sudo."""

    def __init__(self, cfg: KittyConfig, plat: Platform, runtime: str, home: str | None):
        self.env = dict(plat.env)
        if runtime == "colima":
            # Explicit, so neither the CLI's current context nor a stray DOCKER_HOST decides.
            self.env["DOCKER_HOST"] = f"unix://{colima_socket(home, cfg.stack.colima.profile)}"
        self.sudo = plat.docker_sudo


def runtime_of(stack: Stack, plat: Platform) -> str:
    allowed = plat.container_runtimes
    if stack.runtime == "auto":
        return allowed[0]
    if stack.runtime not in allowed:
        raise DeployError(
            f"{host.name}: kitty_stack.runtime {stack.runtime!r} does not run on {plat.os} "
            f"(choose from auto, {', '.join(allowed)})"
        )
    return stack.runtime


def install(cfg: KittyConfig, plat: Platform, runtime: str, home: str | None) -> list:
    """What `runtime` needs on the host before it can start: colima's daemon, or docker.io."""
    if runtime == "colima":
        return [_colima(cfg, plat, home)]
    if runtime == "engine":
        return _apt_docker(plat)
    if runtime == "external" and plat.package_manager == "apt":
        # Only the client of docker.io: mask its engine before the package can start it.
        masks = [
            files.link(
                name=f"Mask {unit} (the engine is external)",
                path=f"/etc/systemd/system/{unit}",
                target="/dev/null",
                _sudo=plat.sudo,
            )
            for unit in ENGINE_UNITS
        ]
        if any(mask.will_change for mask in masks):
            systemd.daemon_reload(name="Reload systemd (masked engine units)", _sudo=plat.sudo)
        return masks + _apt_docker(plat)
    return []


def start(cfg: KittyConfig, plat: Platform, runtime: str, engine: Engine, installed: list) -> bool:
    """Start the engine and wait for `docker info`; True when the runtime changes (`installed` or its start)."""
    ops = list(installed)
    if runtime == "engine":
        ops.append(
            systemd.service(name="Run the Docker engine", service="docker", running=True, enabled=True, _sudo=plat.sudo)
        )
    changed = any(op.will_change for op in ops)

    info = host.get_fact(DockerInfo, _env=engine.env, _sudo=engine.sudo)
    if runtime in ("docker-desktop", "orbstack") and not info["ok"]:
        app = {"docker-desktop": "Docker Desktop", "orbstack": "OrbStack"}[runtime]
        raise DeployError(
            f"{host.name}: kitty_stack.runtime is {runtime!r} but `docker info` does not answer ({info['error']}). "
            f"{app} only starts in a GUI login session: log in at the Mac, start {app} (and let it start at "
            "login), or use runtime 'colima', which the deploy starts headless."
        )
    if changed or not info["ok"]:
        engine_answers(
            name="Wait for the container engine (docker info)",
            timeout=cfg.stack.runtime_timeout,
            what=_engine_name(runtime),
            _env=engine.env,
            _sudo=engine.sudo,
        )
    return changed


def _engine_name(runtime: str) -> str:
    return {
        "colima": "colima's Docker engine",
        "engine": "the Docker engine (systemd unit docker)",
        "external": "the external Docker engine (DOCKER_HOST or /var/run/docker.sock)",
    }.get(runtime, runtime)


# --- colima ------------------------------------------------------------------------

# Starts colima after removing the stale files an unclean end leaves (templates/colima-start.sh).
COLIMA_WRAPPER = templates.path("colima-start.sh")


def colima_profile(profile: str) -> tuple[str, str]:
    """(Lima instance, folder under ~/.colima) of a colima profile, as colima computes them.

    colima's config/profile.go (ProfileFromName): "", "default" and "colima" are colima's
    own profile, Lima instance `colima` in folder `default`; any other N, or "colima-N",
    is instance `colima-N` in folder N. So `colima` and `colima-x` are not folders of theirs.
    """
    if profile in ("", "colima", "default"):
        return "colima", "default"
    short = profile.removeprefix("colima-")
    return f"colima-{short}", short


def colima_socket(home: str, profile: str) -> str:
    """The docker socket colima makes for `profile`: ~/.colima/<folder>/docker.sock."""
    return f"{home}/.colima/{colima_profile(profile)[1]}/docker.sock"


def lima_instance_dir(home: str, profile: str) -> str:
    """Where Lima keeps the profile's VM and its host agent's ha.pid / ha.sock."""
    return f"{home}/.colima/_lima/{colima_profile(profile)[0]}"


def colima_program(cfg: KittyConfig, plat: Platform, home: str) -> Program:
    """`colima start --foreground` as a LaunchDaemon running as the admin.

    In the foreground, so its supervisor sees it exit and starts it again. Not
    a LaunchAgent (`brew services`): those only load in a GUI login, which a
    headless Mac reached over SSH never has.
    """
    colima = cfg.stack.colima
    # Through colima-start.sh: after a power cut Lima's stale ha.pid / ha.sock would make every
    # start fail, and KeepAlive would loop on it forever; the wrapper removes them, then execs colima.
    argv = ["/bin/sh", layout.colima_wrapper(cfg), lima_instance_dir(home, colima.profile)]
    argv += [f"{plat.brew_prefix}/bin/colima", "start", "--foreground", "--profile", colima.profile]
    argv += ["--cpu", str(colima.cpu), "--memory", str(colima.memory_gib), "--disk", str(colima.disk_gib)]
    return Program(
        name="colima",
        label=COLIMA_LABEL,
        unit="",
        description="colima's VM: the Docker engine of the application stack",
        argv=argv,
        env={**plat.env, "HOME": home, "USER": plat.user},
        log=layout.colima_log(cfg),
        working_directory=home,
        user=plat.user,
        # colima stops its VM on SIGTERM: give it time, or launchd kills the VM mid-write.
        stop_timeout=120,
        restart_delay=cfg.launchd.throttle_interval,
    )


def _colima(cfg: KittyConfig, plat: Platform, home: str | None):
    missing = [formula for formula in COLIMA_FORMULAE if formula not in cfg.packages.brew]
    if missing:
        raise DeployError(
            f"{host.name}: kitty_stack.runtime 'colima' needs {', '.join(missing)} in kitty_packages.brew"
        )
    if not home:
        raise DeployError(f"{host.name}: cannot tell the home folder of {plat.user!r} (colima keeps its VM there)")
    host_file.content(
        name="colima start wrapper (stale Lima files after a power cut)",
        path=layout.colima_wrapper(cfg),
        text=COLIMA_WRAPPER.read_text(),
        mode="755",
        user="root",
        _sudo=plat.sudo,
    )
    (decision,) = supervise.converge(cfg, plat, [Slot(COLIMA_LABEL, "", colima_program(cfg, plat, home))])
    return decision


# --- The Linux engine --------------------------------------------------------------


def _apt_docker(plat: Platform) -> list:
    return prerequisites.install_apt_missing(
        ["docker.io"], plat, refresh_name="Refresh the apt index (docker.io)", install_name="Install docker.io"
    )


# --- docker info ---------------------------------------------------------------------


class DockerInfo(FactBase[dict]):
    """Whether the engine answers `docker info`: {"ok": True, "version": "27.3.1", "error": None}."""

    def command(self) -> str:
        return (
            "if ! command -v docker >/dev/null 2>&1; then echo 'error docker: command not found'; exit 0; fi; "
            "out=$(docker info --format '{{.ServerVersion}}' 2>&1); rc=$?; "
            'if [ "$rc" -eq 0 ]; then echo "version $out"; else echo "error $out" | tr "\\n" " "; echo; fi'
        )

    @staticmethod
    def default() -> dict:
        return {"ok": False, "version": None, "error": "no answer"}

    def process(self, output) -> dict:
        text = " ".join(line.strip() for line in output).strip()
        kind, _, rest = text.partition(" ")
        if kind == "version" and rest:
            return {"ok": True, "version": rest, "error": None}
        return {"ok": False, "version": None, "error": rest[:300] or "no answer"}


@operation()
def engine_answers(timeout: int, what: str):
    """Wait until `docker info` answers; fail naming the engine and its last error."""
    yield StringCommand(
        f"i=0; until out=$(docker info --format '{{{{.ServerVersion}}}}' 2>&1); do "
        f'if [ "$i" -ge {int(timeout)} ]; then '
        f'echo "{what} did not answer docker info within {int(timeout)}s: $out" >&2; exit 1; fi; '
        "i=$((i + 2)); sleep 2; done"
    )
