"""The manual's shutdown, step by step, and its emergency stop: only what kitty-ops runs, by name.

    images service     the API, then the RQ worker (it finishes its job), through the supervisor
    application stack  `docker compose stop` (containers and volumes kept: the next deploy
                       starts them again without recreating anything); emergency: `compose kill`
    model servers      SIGTERM through the supervisor, which kills at the program's stop timeout
    verification       every KITTY port free, no KITTY process left: a table, and a failure
                       naming what is still there

Stopped programs are disabled at boot; their plists/units stay (tasks/supervise/stop.py).
Emergency (`--data emergency=true`): no waiting, SIGKILL through the supervisor and
`docker compose kill`, still only kitty-ops' own labels, units and compose project:
another llama-server or container on the machine is left alone.
"""

from __future__ import annotations

import shlex

from pyinfra import host, logger
from pyinfra.api import FactBase, FunctionCommand, Host, deploy, operation
from pyinfra.facts.server import Home

from tasks.app import compose, runtime
from tasks.config import KittyConfig, data_choices, data_flag
from tasks.engine import run_record
from tasks.host import layout
from tasks.host.host_facts import ListeningPorts
from tasks.host.platform import Platform
from tasks.inference import rpc_workers, servers
from tasks.supervise import Family, control
from tasks.supervise import stop as supervise_stop

STACK = "application stack"
ROLES = ("inference", "application")


def emergency(data) -> bool:
    """`--data emergency=true`; a value that is neither yes nor no is refused before anything stops."""
    return data_flag(data, "emergency")


def roles(groups, data) -> set[str]:
    """The roles to stop on this host: its inventory groups, narrowed by `--data role=inference|application`."""
    mine = {group for group in groups if group in ROLES}
    # A misspelt role is refused: narrowed to nothing, the stop would stop nothing and pass.
    only = data_choices(data, "role", ROLES)
    return mine if only is None else mine & only


@deploy("Images service")
def images_service(cfg: KittyConfig, plat: Platform, emergency: bool) -> None:
    """The API first (no new requests), then the worker (it finishes the image it is making)."""
    family = Family("images service", layout.IMAGES_LABEL_PREFIX, layout.IMAGES_UNIT_PREFIX)

    def who(name: str) -> str:
        return "images " + supervise_stop.short_name(plat, family, name)

    found = sorted(control.installed(cfg, plat, family), key=lambda name: "worker" in name)
    supervise_stop.stop(plat, supervise_stop.targets(plat, found, who), emergency=emergency)


@deploy("Model servers")
def model_servers(cfg: KittyConfig, plat: Platform, emergency: bool) -> None:
    family = servers.family(cfg)

    def who(name: str) -> str:
        return "server " + supervise_stop.short_name(plat, family, name)

    # LaunchAgents in the admin's GUI session when kitty_launchd.kind is 'agent'.
    agent = servers.launchd_agent(cfg, plat)
    found = control.installed(cfg, plat, family, agent)
    supervise_stop.stop(plat, supervise_stop.targets(plat, found, who, agent), emergency=emergency)


@deploy("RPC worker")
def rpc_worker(cfg: KittyConfig, plat: Platform, emergency: bool) -> None:
    """llama.cpp's rpc-server, after the model servers that hold part of their model on it."""
    found = control.installed(cfg, plat, rpc_workers.FAMILY)
    supervise_stop.stop(plat, supervise_stop.targets(plat, found, lambda name: "rpc worker"), emergency=emergency)


def docker(cfg: KittyConfig, plat: Platform) -> compose.Docker:
    kind = runtime.runtime_of(cfg.stack, plat)
    return compose.Docker(cfg, plat, kind, host.get_fact(Home) if kind == "colima" else None)


@deploy("Application stack")
def stack(cfg: KittyConfig, plat: Platform, emergency: bool) -> None:
    """`docker compose stop` (or `kill`) of kitty-ops' own project, when one of its containers runs."""
    if not cfg.stack.enabled:
        return
    engine = docker(cfg, plat)
    compose_stopped(
        name=f"{STACK}: docker compose {'kill' if emergency else 'stop'} (containers and volumes kept)",
        command=engine.compose,
        project=cfg.stack.project_name,
        emergency=emergency,
        _env=engine.env,
        _sudo=engine.sudo,
    )


def running_services(state: dict) -> list[str]:
    return sorted(name for name, c in state["containers"].items() if c["state"] in ("running", "restarting", "paused"))


def stack_outcome(on: Host) -> dict:
    """What compose stopped or killed in this run on the host, for the table: {"stack": what}."""
    return run_record.kept(on, "stop: the stack")


@operation()
def compose_stopped(command: str, project: str, emergency: bool = False):
    """Every container of the compose project stopped; none removed, no volume touched.

    + command: the compose command line of the project (tasks/app/compose.py)
    + project: its name
    + emergency: `compose kill` (SIGKILL, no wait) instead of `compose stop`
    """
    state = host.get_fact(compose.ComposeState, compose=command, project=project)
    running = running_services(state)
    if not running:
        stack_outcome(host)["stack"] = "already stopped"
        host.noop(f"no container of compose project {project} runs")
        return
    stack_outcome(host)["stack"] = f"{'killed' if emergency else 'stopped'}: {', '.join(running)}"
    yield f"{command} {'kill' if emergency else 'stop'} 2>&1"


# --- Verification ------------------------------------------------------------------


def ports(cfg: KittyConfig, groups: set[str]) -> dict[int, str]:
    """{port: what of KITTY's listens there} for the roles stopped on this host."""
    found = {}
    if "inference" in groups:
        found.update({srv.port: f"server {name}" for name, srv in cfg.enabled_servers().items()})
        if cfg.rpc_worker:
            found[cfg.rpc_worker.port] = "rpc worker"
    if "application" in groups:
        if cfg.stack.enabled:
            found.update({s.port: f"stack {name}" for name, s in cfg.stack.services.items() if s.port})
        if cfg.images.enabled:
            found[cfg.images.port] = "images api"
    return found


def process_paths(cfg: KittyConfig, groups: set[str]) -> list[str]:
    """Where KITTY's executables live: a process started from one of these is ours, any other is not."""
    paths = []
    if "inference" in groups:
        paths.append(f"{layout.llamacpp_dir(cfg)}/")
    if "application" in groups:
        paths.append(f"{layout.images_venv(cfg)}/")
    return paths


class KittyProcesses(FactBase[list]):
    """Processes whose executable (or the script a venv's python runs) is under one of `paths`: [(pid, args)].

    Filtered on the host: other processes' command lines are never read into the output.
    """

    default = list

    def command(self, paths: list[str]) -> str:
        # index(..) == 1: the path starts a word of the command line (the program, or its script).
        program = (
            'BEGIN { n = split(P, p, "|") } '
            "{ for (i = 2; i <= NF && i <= 3; i++) for (j = 1; j <= n; j++) "
            'if (p[j] != "" && index($i, p[j]) == 1) { print; next } }'
        )
        joined = shlex.quote("|".join(paths))
        return f"ps -A -o pid= -o args= | awk -v P={joined} {shlex.quote(program)} || true"

    def process(self, output) -> list:
        found = []
        for line in output:
            pid, _, args = line.strip().partition(" ")
            if pid.isdigit():
                found.append((int(pid), args.strip()))
        return found


@deploy("Verification")
def verify(cfg: KittyConfig, plat: Platform, groups: set[str], emergency: bool) -> None:
    kwargs = {}
    if "application" in groups and cfg.stack.enabled:
        engine = docker(cfg, plat)
        kwargs = {"compose_command": engine.compose, "_env": engine.env}
    stop_table(
        name="What stop did",
        ports=ports(cfg, groups),
        paths=process_paths(cfg, groups),
        project=cfg.stack.project_name,
        emergency=emergency,
        _sudo=plat.sudo,
        **kwargs,
    )


@operation()
def stop_table(ports: dict, paths: list[str], project: str, emergency: bool, compose_command: str | None = None):
    """Print what each step did and what is left; fail, naming it, when a KITTY port or process is still there."""
    if not host.state.is_executing:
        host.noop("checked on the host once everything is stopped")
        return
    listening = host.get_fact(ListeningPorts) or {}
    left = host.get_fact(KittyProcesses, paths=paths) if paths else []
    rows = [(o.name, o.result + (f" ({o.seconds:.0f} s)" if o.seconds is not None else "")) for o in
            supervise_stop.outcomes(host)]  # fmt: skip
    problems = []
    if compose_command:
        state = host.get_fact(compose.ComposeState, compose=compose_command, project=project)
        still = running_services(state)
        rows.append((f"{STACK} ({project})", stack_outcome(host).get("stack", "-")))
        problems += [f"stack {name}: its container still runs" for name in still]
    for port, owner in sorted(ports.items()):
        holder = listening.get(port)
        if holder:
            who = f"PID {holder['pid']} ({holder['command']})" if holder["pid"] else "a process of another namespace"
            rows.append((f"port {port} ({owner})", f"still held by {who}"))
            problems.append(f"port {port} ({owner}) is still held by {who}")
        else:
            rows.append((f"port {port} ({owner})", "free"))
    rows.append(("KITTY processes", "none left" if not left else f"{len(left)} left"))
    problems += [f"PID {pid} is still running: {args[:120]}" for pid, args in left]
    for line in render(rows, emergency):
        host.log(line, logger.info)
    if problems:
        yield FunctionCommand(_fail, ("stop left things running:\n" + "\n".join(f"  {p}" for p in problems),), {})


def render(rows: list[tuple[str, str]], emergency: bool = False) -> list[str]:
    table = [("what", "emergency stop" if emergency else "stop"), *rows]
    width = max(len(what) for what, _ in table)
    return [f"{what:<{width}}  {result}".rstrip() for what, result in table]


def _fail(state, host, message: str) -> bool:
    for line in message.splitlines():
        host.log_styled(line, fg="red", log_func=logger.error)
    return False
