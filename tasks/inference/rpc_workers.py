"""llama.cpp RPC: one model split across hosts, `rpc-server` on the workers, `--rpc` on the main server.

    kitty_rpc_worker        host data of an inference host: it runs one rpc-server
                            ({"port": 50052, "host": "127.0.0.1", ...}, tasks/config.RpcWorker)
    kitty_servers.<name>.rpc_workers
                            inventory names of the hosts whose rpc-server the server uses;
                            rendered as --rpc <address>:<port>,... (tasks/inference/server_args.py)

The worker is a supervised Program (tasks/supervise) like a model server:
llama.cpp's `ggml-rpc-server` from the same `current` build (built with
GGML_RPC=ON on the hosts that need it, tasks/inference/llamacpp.py), restarted when its
definition or the build changes, removed when the host data no longer declares
it. deploy.py converges the workers before the servers: pyinfra runs each
operation on every host before the next, so every worker accepts connections
(the health wait: a TCP connect) before any main server (re)starts.

rpc-server has no authentication and no TLS (llama.cpp's tools/rpc/README:
"Never run the RPC server on an open network"): whoever reaches its port can
allocate memory and run computations on the worker and read what it holds. It
binds to loopback unless `allow_beyond_loopback` says otherwise, and then only
to the address it is given (never a key: it has none to check).

Resolved from the whole inventory, once, before any operation (`placed`):
each named worker exists, is an inference host with kitty_rpc_worker, is
reachable from the main server's host (loopback only from the same host), and
serves one main server (rpc-server serves one client at a time: a second
would wait forever). The address in --rpc is the worker's bind address, or its
kitty_address when it binds to every interface. What the workers run (their
kitty_rpc_worker and llama.cpp settings) is an input of each server using them
(`<opt_dir>/state/rpc/<server>.workers`): a changed worker restarts that
server once, after the worker (a main server's connection does not survive
its worker's restart).

Memory: llama.cpp spreads the weights and KV cache over the RPC devices (in
--rpc order) and then the main host's GPU, in proportion to each device's
free memory unless --tensor-split says otherwise. The budget (tasks/system/memory_budget.py)
counts an even split over the workers and the main host, or --tensor-split's
proportions when extra_args give it, and each device's compute buffers in full.
"""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra.api import deploy
from pyinfra.operations import files

from tasks import supervise
from tasks.config import KittyConfig, ModelServer, RpcUse, RpcWorker, placement
from tasks.config.rpc_placement import local_address
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.inference import llamacpp
from tasks.supervise import Family, Health, Input, Program, Slot, health

FAMILY = Family("rpc worker", layout.RPC_WORKER_LABEL, layout.RPC_WORKER_UNIT.removesuffix(".service"))
NAME = "rpc worker"


def binary(cfg: KittyConfig) -> str:
    return f"{layout.llamacpp_current(cfg)}/bin/{llamacpp.RPC_SERVER_TARGET}"


def health_url(worker: RpcWorker) -> str:
    return f"telnet://{placement.url_host(local_address(worker))}:{worker.port}"


def tcp_probe(worker: RpcWorker) -> str:
    """POSIX sh that exits 0 when the worker accepts a connection (curl sends nothing; see wait-healthy.sh)."""
    url = shlex.quote(health_url(worker))
    return (
        f"t=$(curl -s -o /dev/null -w '%{{time_connect}}' --max-time 1 {url} </dev/null 2>/dev/null); "
        "case $t in *[1-9]*) true ;; *) false ;; esac"
    )


def program(cfg: KittyConfig, plat: Platform, build_id: str) -> Program:
    """This host's rpc-server, run by llama.cpp build `build_id` (what `current` points at once this converge ran)."""
    worker = cfg.rpc_worker
    argv = [binary(cfg), "--host", worker.host, "--port", str(worker.port)]
    if worker.threads is not None:
        argv += ["--threads", str(worker.threads)]
    if worker.devices:
        argv += ["--device", ",".join(worker.devices)]
    env = {}
    if worker.cache:
        argv.append("--cache")
        env["LLAMA_CACHE"] = layout.rpc_cache_dir(cfg)
    return Program(
        name=NAME,
        label=layout.RPC_WORKER_LABEL,
        unit=layout.RPC_WORKER_UNIT,
        description=f"KITTY llama.cpp rpc-server on {worker.host}:{worker.port}",
        argv=argv,
        log=layout.rpc_worker_log(cfg),
        working_directory=cfg.paths.opt_dir,
        user=layout.service_user(cfg, plat),
        env=env,
        stop_timeout=30,
        restart_delay=cfg.launchd.throttle_interval,
        inputs=(Input("llama.cpp", layout.llamacpp_current(cfg), "link", wanted=layout.llamacpp_build(cfg, build_id)),),
        health=Health(health_url(worker), "tcp", worker.health_timeout),
        note=f"listens on {worker.host}:{worker.port}",
    )


def server_inputs(cfg: KittyConfig, name: str, srv: ModelServer) -> tuple[Input, ...]:
    """A server with workers restarts when what they run changes (the line `run` writes first)."""
    use = cfg.rpc.get(name)
    if not srv.rpc_workers or use is None:
        return ()
    return (Input("rpc workers", layout.rpc_state(cfg, name), "file", wanted=state_line(use)),)


def state_line(use: RpcUse) -> str:
    return f"{use.definition} {','.join(use.endpoints)}"


@deploy("RPC workers")
def run(cfg: KittyConfig, plat: Platform) -> None:
    """This host's rpc-server (or its removal), waited for; what each split server's workers run, recorded."""
    worker = None
    if cfg.rpc_worker is not None:
        worker = program(cfg, plat, llamacpp.resolved_build(cfg, plat).id)
        if cfg.rpc_worker.cache:
            files.directory(
                name="rpc-server cache folder",
                path=layout.rpc_cache_dir(cfg),
                user=layout.service_user(cfg, plat),
                _sudo=plat.sudo,
            )
    slot = Slot(layout.RPC_WORKER_LABEL, layout.RPC_WORKER_UNIT, worker, NAME)
    decisions = supervise.converge(cfg, plat, [slot], FAMILY)
    if worker:
        health.wait(cfg, plat, [worker], decisions, "the rpc-server")
    # Written before the servers step reads it: a changed line restarts the server, once.
    for name, srv in cfg.enabled_servers().items():
        use = cfg.rpc.get(name)
        if srv.rpc_workers and use is not None:
            files.put(
                name=f"What server {name}'s rpc workers run",
                src=StringIO(state_line(use) + "\n"),
                dest=layout.rpc_state(cfg, name),
                mode="644",
                create_remote_dir=True,
                _sudo=plat.sudo,
            )
