"""One supervised llama-server per model server: a launchd job on macOS, a systemd unit on Linux.

Replaces the manual's `nohup llama-server ... &`, PID files and `kill -9`.
A server is (re)started only when something it depends on changed: its
unit/plist (a flag), the llama.cpp build behind `current`, or one of its
model files. After any (re)start the deploy waits for `/health` of exactly
those servers, on the host itself.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from pyinfra import host
from pyinfra.api import FunctionCommand, deploy, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.server import Users
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from tasks import launchd, llamacpp, server_args, systemd_unit
from tasks.config import KittyConfig, ModelServer
from tasks.facts import FindUnits, LegacyServerPids, ListeningPorts
from tasks.platform import Platform

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
UNIT_DIR = systemd_unit.UNIT_DIR
UNIT_PREFIX = "kitty-llama-"


@dataclass
class Started:
    """A server and the operations that, if they change anything, mean it (re)started."""

    name: str
    url: str
    timeout: int
    log: str
    ops: list[OperationMeta] = field(default_factory=list)


def unit_name(name: str) -> str:
    return f"{UNIT_PREFIX}{name}.service"


def service_user(cfg: KittyConfig, plat: Platform) -> str:
    return cfg.paths.service_user or plat.user


def health_url(server: ModelServer) -> str:
    address = "127.0.0.1" if server.host in ("0.0.0.0", "::") else server.host
    return f"http://{address}:{server.port}/health"


@deploy("Model servers")
def run(
    cfg: KittyConfig,
    plat: Platform,
    llama_changes: list[OperationMeta],
    model_changes: dict[str, list[OperationMeta]],
) -> None:
    user = service_user(cfg, plat)
    _refuse_foreign_ports(cfg, plat)
    _stop_legacy_servers(cfg, plat)
    if plat.supervisor == "systemd":
        _service_account(cfg, plat, user)
    started = []
    for name, srv in cfg.servers.items():
        inputs = llama_changes + model_changes.get(srv.model, []) + model_changes.get(srv.mmproj or "", [])
        if plat.supervisor == "systemd":
            ops = _systemd_server(cfg, plat, name, srv, user, inputs)
        else:
            ops = _launchd_server(cfg, plat, name, srv, user, inputs)
        if srv.enabled:
            started.append(Started(name, health_url(srv), srv.health_timeout, launchd.log_path(cfg, name), ops))
    if plat.supervisor == "systemd":
        _remove_undeclared_units(cfg, plat)
    if started:
        files.put(
            name="health wait script",
            src=str(TEMPLATES / "wait-healthy.sh"),
            dest=_wait_script(cfg),
            mode="755",
            _sudo=plat.sudo,
        )
        wait_healthy(
            name="Wait for /health of (re)started servers",
            script=_wait_script(cfg),
            servers=started,
            # Nothing (re)started, nothing to wait for: a converged host plans no work here.
            _if=any_changed(*[op for s in started for op in s.ops]),
        )


def _wait_script(cfg: KittyConfig) -> str:
    return f"{cfg.paths.opt_dir}/wait-healthy.sh"


def render_unit(cfg: KittyConfig, plat: Platform, name: str, srv: ModelServer) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    return env.get_template("llama-server.service.j2").render(
        name=name,
        alias=srv.alias,
        user=service_user(cfg, plat),
        working_directory=cfg.paths.opt_dir,
        arguments=server_args.arguments(cfg, name, srv, llamacpp.binary(cfg), cfg.paths.models_dir),
        environment=dict(srv.env),
        restart_sec=cfg.launchd.throttle_interval,
        log_path=launchd.log_path(cfg, name),
    )


def _systemd_server(
    cfg: KittyConfig, plat: Platform, name: str, srv: ModelServer, user: str, inputs: list[OperationMeta]
) -> list[OperationMeta]:
    if not srv.enabled:
        systemd_unit.remove(name, unit_name(name), plat)
        return []
    text = render_unit(cfg, plat, name, srv)
    return systemd_unit.converge(name, unit_name(name), text, plat, inputs, "unit, build or model changed")


def _remove_undeclared_units(cfg: KittyConfig, plat: Platform) -> None:
    """A server deleted from group_data (not just disabled) must not keep running."""
    declared = {unit_name(name) for name in cfg.servers}
    for unit in host.get_fact(FindUnits, directory=UNIT_DIR, prefix=UNIT_PREFIX) or []:
        if unit not in declared:
            systemd_unit.remove(unit.removeprefix(UNIT_PREFIX).removesuffix(".service"), unit, plat)


def _service_account(cfg: KittyConfig, plat: Platform, user: str) -> None:
    if cfg.paths.service_user and user not in (host.get_fact(Users) or {}):
        server.user(
            name=f"Service account {user}",
            user=user,
            system=True,
            shell="/usr/sbin/nologin",
            create_home=False,
            home=cfg.paths.opt_dir,
            _sudo=plat.sudo,
        )


def _launchd_server(
    cfg: KittyConfig, plat: Platform, name: str, srv: ModelServer, user: str, inputs: list[OperationMeta]
) -> list[OperationMeta]:
    if cfg.launchd.kind != "daemon":
        raise DeployError("kitty_launchd.kind: only 'daemon' is converged so far (agents need a GUI login)")
    job_label = launchd.label(cfg, name)
    plist = launchd.server_plist(cfg, name, srv, binary=llamacpp.binary(cfg), user=user) if srv.enabled else None
    job = launchd.job(
        name=f"{name}: launchd job {job_label}",
        job_label=job_label,
        plist=plist,
        inputs=_launchd_inputs(cfg, plat, srv) if srv.enabled else None,
        inputs_path=f"{cfg.paths.opt_dir}/state/launchd/{name}.inputs",
        present=srv.enabled,
        _sudo=plat.sudo,
    )
    kicked = launchd.kickstart(
        name=f"{name}: restart (model replaced)",
        job_label=job_label,
        _if=any_changed(*inputs),
        _sudo=plat.sudo,
    )
    return [job, kicked] if srv.enabled else []


def _launchd_inputs(cfg: KittyConfig, plat: Platform, srv: ModelServer) -> str:
    """What the job runs besides its plist: the build behind `current` and the pinned model files."""
    files_of = [cfg.models[srv.model]] + ([cfg.models[srv.mmproj]] if srv.mmproj else [])
    pins = [f"{m.repo}@{m.revision}:{f.name}:{f.sha256}" for m in files_of for f in m.files]
    return "\n".join([llamacpp.wanted_build(cfg, plat).id, *pins]) + "\n"


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
        if "llama-server" in command:
            server.shell(
                name=f"Stop llama-server PID {pid} left by the old start scripts",
                commands=[
                    f"kill -TERM {pid}; for i in $(seq 30); do kill -0 {pid} 2>/dev/null || break; sleep 1; done",
                    f"rm -f {pid_file}",
                ],
                _sudo=plat.sudo,
            )
        else:
            files.file(name=f"Remove stale PID file {pid_file}", path=pid_file, present=False, _sudo=plat.sudo)


@operation()
def wait_healthy(script: str, servers: list[Started]):
    """Wait, on the host, for /health of the servers whose operations changed something in this run."""
    yield FunctionCommand(_wait, (script, servers), {})


def _wait(state, host, script: str, servers: list[Started]) -> bool:
    restarted = [s for s in servers if any(op.did_change() for op in s.ops)]
    if not restarted:
        return True
    specs = [f"{s.name}|{s.url}|{s.timeout}|{s.log}" for s in restarted]
    ok, _ = host.run_shell_command(shlex.join(["bash", script, *specs]), print_output=True)
    return ok
