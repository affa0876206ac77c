"""llama.cpp RPC: one model split across hosts, `rpc-server` on the workers, `--rpc` on the main server.

    kitty_rpc_worker        host data of an inference host: it runs one rpc-server
                            ({"port": 50052, "host": "127.0.0.1", ...}, tasks/config.RpcWorker)
    kitty_servers.<name>.rpc_workers
                            inventory names of the hosts whose rpc-server the server uses;
                            rendered as --rpc <address>:<port>,... (tasks/server_args.py)

The worker is a supervised Program (tasks/supervise) like a model server:
llama.cpp's `ggml-rpc-server` from the same `current` build (built with
GGML_RPC=ON on the hosts that need it, tasks/llamacpp.py), restarted when its
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
free memory unless --tensor-split says otherwise. The budget (tasks/memory_budget.py)
counts an even split over the workers and the main host, or --tensor-split's
proportions when extra_args give it, and each device's compute buffers in full.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable
from io import StringIO
from weakref import WeakKeyDictionary

from pyinfra.api import deploy
from pyinfra.operations import files

from tasks import health, layout, llamacpp, placement, supervise
from tasks.config import ConfigError, KittyConfig, ModelServer, RpcUse, RpcWorker
from tasks.platform import Platform
from tasks.supervise import Family, Health, Input, Program, Slot

FAMILY = Family("rpc worker", layout.RPC_WORKER_LABEL, layout.RPC_WORKER_UNIT.removesuffix(".service"))
NAME = "rpc worker"
TENSOR_SPLIT = ("-ts", "--tensor-split")


def binary(cfg: KittyConfig) -> str:
    return f"{llamacpp.root(cfg)}/current/bin/{llamacpp.RPC_SERVER_TARGET}"


def cache_dir(cfg: KittyConfig) -> str:
    # rpc-server's --cache goes to $LLAMA_CACHE/rpc: a folder the deploy owns, not the service user's home.
    return f"{cfg.paths.opt_dir}/rpc-cache"


def local_address(worker: RpcWorker) -> str:
    """Where the worker is reached from its own host: its bind address, loopback for a wildcard."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(worker.host, worker.host)


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
        env["LLAMA_CACHE"] = cache_dir(cfg)
    root = llamacpp.root(cfg)
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
        inputs=(Input("llama.cpp", f"{root}/current", "link", wanted=f"{root}/builds/{build_id}"),),
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
                path=cache_dir(cfg),
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


# --- From the whole inventory -------------------------------------------------------------


def split(srv: ModelServer) -> list[float]:
    """Each device's part of the model: the workers in --rpc order, then the main host.

    --tensor-split in extra_args (llama.cpp's device order), else an even split.
    """
    devices = len(srv.rpc_workers) + 1
    given = None
    for i, arg in enumerate(srv.extra_args):
        flag, _, value = arg.partition("=")
        if flag in TENSOR_SPLIT:
            given = value or (srv.extra_args[i + 1] if i + 1 < len(srv.extra_args) else "")
    if given:
        try:
            parts = [float(p) for p in given.replace("/", ",").split(",") if p.strip()]
        except ValueError:
            parts = []
        parts = (parts + [0.0] * devices)[:devices]
        total = sum(parts)
        if total > 0 and all(p >= 0 for p in parts):
            return [p / total for p in parts]
    return [1 / devices] * devices


def definition(view: placement.HostView, endpoint: str) -> dict:
    """What a worker runs, as data: a change of any of it restarts the servers using it."""
    llama = view.cfg.llamacpp
    return {
        "host": view.name,
        "endpoint": endpoint,
        # The firewall's allow_from is not what the worker runs (tasks/firewall.py): no restart for it.
        "worker": view.cfg.rpc_worker.model_dump(mode="json", exclude={"allow_from"}),
        "llama.cpp": [llama.git_url, llama.ref, llama.backend, llama.build_number, sorted(llama.cmake_options.items())]
        # Said only when chosen, so a worker defined before the setting existed keeps its definition.
        + ([llama.cpu] if llama.cpu != "auto" else []),
    }


def compute(views: Iterable[placement.HostView], placed: placement.Placement) -> dict[str, dict[str, RpcUse]]:
    """{host: {server: RpcUse}} for every split server; ConfigError listing every problem."""
    views = list(views)
    by_name = {view.name: view for view in views}
    errors: list[str] = []
    shares: dict[str, dict[str, float]] = {}
    mains: dict[str, dict[str, tuple[list[str], list[dict]]]] = {}
    users: dict[str, list[str]] = {}
    for server, sites in placed.sites.items():
        for site in sites:
            main = by_name[site.host]
            srv = main.cfg.servers[server]
            if not srv.rpc_workers:
                continue
            where = f"{main.name}: kitty_servers.{server}.rpc_workers"
            parts = split(srv)
            endpoints, definitions = [], []
            for index, name in enumerate(srv.rpc_workers):
                worker_view = by_name.get(name)
                problem = _unusable(worker_view, name, by_name)
                if problem:
                    errors.append(f"{where}: {problem}")
                    continue
                worker = worker_view.cfg.rpc_worker
                address = _address(worker_view, worker, main.name, placed, server, errors)
                if address is None:
                    continue
                endpoint = f"{placement.url_host(address)}:{worker.port}"
                endpoints.append(endpoint)
                definitions.append(definition(worker_view, endpoint))
                users.setdefault(name, []).append(f"{server} on {main.name}")
                shares.setdefault(name, {}).setdefault(server, 0.0)
                shares[name][server] += parts[index]
            shares.setdefault(main.name, {}).setdefault(server, 0.0)
            shares[main.name][server] += parts[-1]
            mains.setdefault(main.name, {})[server] = (endpoints, definitions)
    for name, used_by in users.items():
        if len(used_by) > 1:
            errors.append(
                f"{name}: kitty_rpc_worker: used by {' and '.join(used_by)}, but rpc-server serves one "
                "client at a time (the second would wait forever): give each split server workers of its own"
            )
    if errors:
        raise ConfigError("invalid llama.cpp RPC workers:\n" + "\n".join(f"  - {line}" for line in errors))
    uses: dict[str, dict[str, RpcUse]] = {}
    for host_name, servers in shares.items():
        for server, share in servers.items():
            endpoints, definitions = mains.get(host_name, {}).get(server, ([], []))
            digest = hashlib.sha1(json.dumps(definitions, sort_keys=True).encode()).hexdigest() if definitions else ""
            uses.setdefault(host_name, {})[server] = RpcUse(
                endpoints=endpoints, definition=digest, share=min(1.0, round(share, 6))
            )
    return uses


def _unusable(view: placement.HostView | None, name: str, by_name: dict) -> str | None:
    if view is None:
        return f"{name!r} is not a host of the inventory (hosts: {', '.join(by_name)})"
    if "inference" not in view.groups:
        return f"{name!r} is not an inference host (its groups: {', '.join(view.groups) or 'none'})"
    if view.cfg.rpc_worker is None:
        return f"{name!r} runs no rpc-server: give it kitty_rpc_worker (host data)"
    return None


def _address(view, worker: RpcWorker, main: str, placed, server: str, errors: list[str]) -> str | None:
    """How the main server's host reaches this worker."""
    if view.name == main:
        return local_address(worker)
    if placement.is_loopback(worker.host):
        errors.append(
            f"{view.name}: kitty_rpc_worker.host: {worker.host!r} is loopback, but server {server!r} on {main} "
            "uses it: bind it to an address that host reaches (allow_beyond_loopback: true; rpc-server has "
            "no authentication, so a private network only your hosts reach)"
        )
        return None
    if worker.host in placement.WILDCARD:
        address = placed.addresses.get(view.name)
        if address is None:
            errors.append(
                f"{view.name}: kitty_address: server {server!r} on {main} uses its rpc-server, "
                "which binds every interface: set kitty_address (or bind kitty_rpc_worker.host to one address)"
            )
        return address
    return worker.host


# Per inventory object, weakly: an id() could be reused by the next run's (or test's) inventory.
_CACHE: WeakKeyDictionary = WeakKeyDictionary()


def of_inventory(inventory) -> dict[str, dict[str, RpcUse]]:
    """Computed once per run: every host's deploy file asks."""
    if inventory not in _CACHE:
        _CACHE[inventory] = compute(placement.views_of(inventory), placement.of_inventory(inventory))
    return _CACHE[inventory]


def placed(cfg: KittyConfig, current_host=None) -> KittyConfig:
    """`cfg` with the split servers this host runs or holds a part of (`cfg.rpc`), from the inventory."""
    from pyinfra import host as context_host

    # `is None`, not `or`: pyinfra's context proxy has no truth value.
    current_host = context_host if current_host is None else current_host
    uses = of_inventory(current_host.inventory).get(current_host.name, {})
    return cfg.model_copy(update={"rpc": uses})
