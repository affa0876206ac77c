"""One supervised llama-server per model server: a LaunchDaemon on macOS, a systemd unit on Linux.

Replaces the manual's `nohup llama-server ... &`, PID files and `kill -9`.
Each server is a supervised Program (tasks/supervise) whose inputs are the
llama.cpp build behind `current` and the stamps of its model files: the
supervisor operation restarts it when its definition or one of those changed
since it was started, once, and never otherwise. A disabled server is
stopped and removed; one deleted from group_data too. After any (re)start the
deploy waits for `/health` of exactly those servers, on the host itself,
reading their supervisor to fail fast, and puts back what a server ran
before when it does not serve (tasks/supervise/health.py). Their flags were checked
against the build's llama-server before anything moved (tasks/inference/llamacpp.py).
"""

from __future__ import annotations

import re
import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server

from tasks import supervise
from tasks.config import KittyConfig, ModelServer
from tasks.host import layout
from tasks.host.host_facts import ListeningPorts
from tasks.host.platform import Platform
from tasks.inference import llamacpp, models, rpc_workers, server_args
from tasks.inference.server_facts import LegacyServerPids
from tasks.supervise import Agent, Family, Health, Input, Program, Slot, control, health

# The old start scripts' PID files: .logs/llamacpp-<name>.pid, nothing else.
LEGACY_PID_FILE = re.compile(r"^llamacpp-[A-Za-z0-9_.-]+\.pid$")


def family(cfg: KittyConfig) -> Family:
    return Family("model servers", cfg.launchd.label_prefix, layout.SERVER_UNIT_PREFIX)


def health_url(server: ModelServer) -> str:
    address = "127.0.0.1" if server.host in ("0.0.0.0", "::") else server.host
    return f"http://{address}:{server.port}/health"


def launchd_agent(cfg: KittyConfig, plat: Platform, required: bool = False) -> Agent | None:
    """The model servers' GUI session when they are LaunchAgents; None: LaunchDaemons (or not launchd)."""
    if not control.has_agents(plat) or cfg.launchd.kind != "agent":
        return None
    return control.gui_agent(plat, required)


def job(cfg: KittyConfig, plat: Platform, name: str) -> control.Job:
    """Server `name` as the supervisor calls it (for bench, diagnose, verify: tasks/supervise/control.py)."""
    return control.Job(layout.server_label(cfg, name), layout.server_unit(name), launchd_agent(cfg, plat))


def program(
    cfg: KittyConfig,
    plat: Platform,
    name: str,
    srv: ModelServer,
    build_id: str,
    fetched: set[str] = frozenset(),
    agent: Agent | None = None,
) -> Program:
    """Model server `name` as a supervised program, run by llama.cpp build `build_id` (what `current`
    points at once this converge ran); `fetched`: model files this converge replaces; `agent`:
    a LaunchAgent in that GUI session (it then runs as that session's user)."""
    return Program(
        name=f"server {name}",
        label=layout.server_label(cfg, name),
        unit=layout.server_unit(name),
        description=f"KITTY llama-server {name} ({srv.alias})",
        argv=server_args.arguments(cfg, name, srv, llamacpp.binary(cfg), cfg.paths.models_dir),
        log=layout.server_log(cfg, name),
        # A folder the deploy owns: launchd will not start a job whose
        # WorkingDirectory is missing, and the app checkout may not be here.
        working_directory=cfg.paths.opt_dir,
        user=layout.service_user(cfg, plat),
        env=dict(srv.env),
        # llama-server exits promptly on SIGTERM; a large model's unmap takes seconds.
        stop_timeout=30,
        restart_delay=cfg.launchd.throttle_interval,
        inputs=inputs(cfg, srv, build_id, fetched, name),
        health=Health(health_url(srv), "llama", srv.health_timeout, gpu_layers=srv.n_gpu_layers),
        note=context_note(srv),
        agent=agent,
    )


def context_note(srv: ModelServer) -> str:
    """The context one request gets, as the restart and health tables show it."""
    shared = "shared KV cache" if srv.kv_unified else f"{srv.ctx_size} / {srv.parallel} slots"
    return f"{srv.ctx_per_request} tokens per request ({shared})"


def inputs(
    cfg: KittyConfig, srv: ModelServer, build_id: str, fetched: set[str], name: str | None = None
) -> tuple[Input, ...]:
    """What a server runs besides its definition: the build behind `current`, each of its model files,
    and what its llama.cpp RPC workers run (tasks/inference/rpc_workers.py)."""
    found = [Input("llama.cpp", layout.llamacpp_current(cfg), "link", wanted=layout.llamacpp_build(cfg, build_id))]
    for model_name in [srv.model] + ([srv.mmproj] if srv.mmproj else []):
        model = cfg.models[model_name]
        for file in model.files:
            rel = f"{model.dir}/{file.name}"
            found.append(Input(f"model {rel}", layout.model_stamp(cfg, model, file), "file", replaced=rel in fetched))
    if name is not None:
        found += rpc_workers.server_inputs(cfg, name, srv)
    return tuple(found)


def programs(
    cfg: KittyConfig, plat: Platform, build_id: str, fetched: set[str] = frozenset(), agent: Agent | None = None
) -> list[Program]:
    return [program(cfg, plat, name, srv, build_id, fetched, agent) for name, srv in cfg.enabled_servers().items()]


@deploy("Model servers")
def run(cfg: KittyConfig, plat: Platform) -> None:
    # kitty_launchd.kind 'agent': LaunchAgents in the admin's GUI session (checked to exist now).
    agent = launchd_agent(cfg, plat, required=True)
    _refuse_foreign_ports(cfg, plat)
    _stop_legacy_servers(cfg, plat)
    # What the model step fetches in this run: a server using such a file restarts on it.
    fetched = models.to_fetch(cfg)
    running = programs(cfg, plat, llamacpp.resolved_build(cfg, plat).id, fetched, agent)
    by_name = {p.name: p for p in running}
    slots = [
        Slot(
            layout.server_label(cfg, name),
            layout.server_unit(name),
            by_name.get(f"server {name}"),
            f"server {name}",
            # Placed on another inference host (tasks/config/placement.py): removed here, not "disabled".
            why=f"runs on {', '.join(cfg.elsewhere[name])}" if name in cfg.elsewhere else "disabled",
            agent=agent,
        )
        for name in cfg.servers
    ]
    decisions = []
    if control.has_agents(plat):
        # The other kind's jobs of this family (kitty_launchd.kind changed): stopped and removed
        # first, so a LaunchDaemon and a LaunchAgent never hold one port at once.
        other = None if agent else control.gui_agent(plat, required=False)
        if agent or other:
            decisions += supervise.converge(cfg, plat, [], family(cfg), other)
    decisions += supervise.converge(cfg, plat, slots, family(cfg), agent)
    health.wait(cfg, plat, running, decisions, "/health of the model servers")


def _refuse_foreign_ports(cfg: KittyConfig, plat: Platform) -> None:
    """A port held by something we do not run is an error naming it; nothing is killed."""
    listening = host.get_fact(ListeningPorts, _sudo=plat.sudo) or {}
    ours = {"llama-server"}
    for name, srv in cfg.enabled_servers().items():
        holder = listening.get(srv.port)
        if holder and holder["command"] not in ours:
            raise DeployError(
                f"{host.name}: port {srv.port} of model server {name!r} is held by another process: "
                f"PID {holder['pid']} ({holder['command']}). Stop it or move kitty_servers.{name}.port; "
                "kitty-ops kills nothing it did not start."
            )


def _stop_legacy_servers(cfg: KittyConfig, plat: Platform) -> None:
    """Servers started by the old scripts (.logs/llamacpp-*.pid): stopped once, gracefully, as a migration."""
    for pid_file, pid, command in host.get_fact(LegacyServerPids, logs_dir=cfg.paths.logs_dir) or []:
        # Only the scripts' own file names, in the logs folder: a name is data from the host, never shell.
        folder, _, name = pid_file.rpartition("/")
        if not LEGACY_PID_FILE.match(name) or folder != cfg.paths.logs_dir.rstrip("/"):
            continue
        if "llama-server" in command:
            server.shell(
                name=f"Stop llama-server PID {pid} left by the old start scripts",
                commands=[
                    f"kill -TERM {int(pid)}; i=0; while kill -0 {int(pid)} 2>/dev/null && [ $i -lt 30 ]; "
                    "do i=$((i + 1)); sleep 1; done"
                ],
                _sudo=plat.sudo,
            )
        files.file(name=f"Remove stale PID file {shlex.quote(pid_file)}", path=pid_file, present=False, _sudo=plat.sudo)
