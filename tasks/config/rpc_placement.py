"""llama.cpp RPC over the whole inventory: which workers each split server uses, at which address.

Resolved once per run, before any operation (`placed`), from every host's data (see
tasks/inference/rpc_workers.py for what runs on the hosts): each named worker exists, is an
inference host with kitty_rpc_worker, is reachable from the main server's host (loopback only
from the same host), and serves one main server (rpc-server serves one client at a time).
Each host's part of every split server is `KittyConfig.rpc` (an RpcUse per server).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from weakref import WeakKeyDictionary

from tasks.config import placement
from tasks.config.schema import ConfigError, KittyConfig, ModelServer, RpcUse, RpcWorker

TENSOR_SPLIT = ("-ts", "--tensor-split")


def local_address(worker: RpcWorker) -> str:
    """Where the worker is reached from its own host: its bind address, loopback for a wildcard."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(worker.host, worker.host)


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
        # The firewall's allow_from is not what the worker runs (tasks/system/firewall.py): no restart for it.
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
