"""Do the enabled model servers fit in the Mac's GPU memory? Decided before anything is downloaded.

Per host: only the servers placed on it count (tasks/config/placement.py leaves the others
not enabled in this host's config).

On Apple Silicon the GPU uses the unified memory, but Metal wires at most
`iogpu.wired_limit_mb` of it. With every layer offloaded (-ngl 999), a
llama-server keeps its weights, its KV cache and its compute buffers there,
so the sum over the enabled servers must stay under the limit the deploy sets.

Linux hosts are skipped: there llama.cpp runs on the CPU (or a discrete GPU
we do not budget) from mmap'd files and ordinary RAM, with no wired limit.

A server whose load_mode locks its weights (mlock, mmap+mlock) wires them a
second time, as the process's own pages (llama.cpp locks its CPU and Metal host
buffers each: llama.cpp #5025), and macOS wires mlock'd pages whatever the
GPU does: they are counted as wired memory too, in the `locked` column, against
the same limit. Where Metal's buffers are the locked pages themselves this is an
upper bound.

A model's shape (layers, KV heads, head dimension, trained context) comes from
its GGUF header, recorded in the models lock (lock_models.py); n_layers,
n_kv_heads and head_dim in kitty_models override it where given.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from pyinfra import host, logger
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import Sysctl

from tasks.config import KittyConfig, Model, ModelFile, ModelServer
from tasks.host.platform import Platform

GIB = 1024**3
MIB = 1024**2
# Model sizes are given in GB (10^9 bytes), as Hugging Face lists them.
GB = 1000**3
# llama-server's default KV cache type (--cache-type-k/-v) is f16.
KV_BYTES_PER_ELEMENT = 2

MEMSIZE = "hw.memsize"
WIRED_LIMIT = "iogpu.wired_limit_mb"


class BudgetError(DeployError):
    """The enabled servers do not fit, or their needs cannot be estimated."""


@dataclass(frozen=True)
class ServerNeed:
    server: str
    model: str
    weights: int
    kv_cache: int
    compute: int
    # Weights an mlock load mode wires as well (tasks/config/schema.py ModelServer.load_mode).
    locked: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.locked


@dataclass(frozen=True)
class Budget:
    needs: list[ServerNeed]
    # Bytes Metal may wire once the deploy has set the limit, and the Mac's whole memory.
    limit: int
    memory: int

    @property
    def total(self) -> int:
        return sum(need.total for need in self.needs)

    @property
    def fits(self) -> bool:
        return self.total <= self.limit

    def fitting_combinations(self) -> list[tuple[str, ...]]:
        """The largest sets of these servers that fit together (none is part of another)."""
        fitting: list[set[str]] = []
        for size in range(len(self.needs), 0, -1):
            for group in combinations(self.needs, size):
                names = {need.server for need in group}
                if sum(need.total for need in group) <= self.limit and not any(names < f for f in fitting):
                    fitting.append(names)
        order = [need.server for need in self.needs]
        return [tuple(name for name in order if name in group) for group in fitting]

    def table(self) -> str:
        # The mlock column only where some server locks its weights: the usual table stays as it was.
        locking = any(n.locked for n in self.needs)
        rows = [("server", "model", "weights GiB", "KV GiB", "compute GiB", *(("mlock GiB",) * locking), "total GiB")]
        rows += [
            (
                n.server,
                n.model,
                _gib(n.weights),
                _gib(n.kv_cache),
                _gib(n.compute),
                *((_gib(n.locked),) * locking),
                _gib(n.total),
            )
            for n in self.needs
        ]
        rows.append(("all enabled", "", "", "", "", *(("",) * locking), _gib(self.total)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            f"Metal may wire {_gib(self.limit)} GiB (iogpu.wired_limit_mb={self.limit // MIB}) "
            f"of this Mac's {_gib(self.memory)} GiB"
        ]
        for row in rows:
            cells = [f"{row[0]:<{widths[0]}}", f"{row[1]:<{widths[1]}}"]
            cells += [f"{cell:>{width}}" for cell, width in zip(row[2:], widths[2:], strict=True)]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)

    def verdict(self) -> str:
        if self.fits:
            return f"fits: {_gib(self.total)} GiB of {_gib(self.limit)} GiB, {_gib(self.limit - self.total)} GiB spare"
        verdict = f"does NOT fit: {_gib(self.total)} GiB needed, {_gib(self.limit)} GiB allowed"
        if self.total > self.memory:
            verdict += f", more than the Mac's whole memory ({_gib(self.memory)} GiB)"
        groups = self.fitting_combinations()
        if groups:
            by_name = {need.server: need for need in self.needs}
            listed = [f"{' + '.join(g)} ({_gib(sum(by_name[s].total for s in g))} GiB)" for g in groups]
            verdict += "\nthese fit together: " + "; ".join(listed)
        else:
            verdict += "\nno enabled server fits on its own"
        return verdict


def file_bytes(file: ModelFile) -> int | None:
    if file.size is not None:
        return file.size
    if file.approx_gb is not None:
        return round(file.approx_gb * GB)
    return None


def attention_dims(model: Model) -> tuple[int, int, int] | None:
    """Layers, KV heads and head dimension: the hand-typed overrides, else the GGUF header's (the lock)."""
    if model.n_layers is not None:
        return model.n_layers, model.n_kv_heads, model.head_dim
    shape = model.shape
    if shape is None or not shape.block_count or not shape.head_count_kv:
        return None
    head_dim = shape.key_length or (
        shape.embedding_length // shape.head_count if shape.embedding_length and shape.head_count else None
    )
    return (shape.block_count, shape.head_count_kv, head_dim) if head_dim else None


def context_warnings(cfg: KittyConfig) -> list[str]:
    """Enabled servers whose ctx_size is more than their model was trained for (the GGUF's context_length)."""
    warnings = []
    for name, server in cfg.enabled_servers().items():
        shape = cfg.models[server.model].shape
        if shape and shape.context_length and server.ctx_size > shape.context_length:
            warnings.append(
                f"kitty_servers.{name}.ctx_size: {server.ctx_size} is more than model {server.model!r} was "
                f"trained for ({shape.context_length} tokens, from its GGUF header): answers degrade past it"
            )
    return warnings


def kv_cache_bytes(model: Model, server: ModelServer) -> int | None:
    """The f16 KV cache of one server, or None when neither the dims nor an estimate are given.

    --ctx-size is the total context of a llama-server, shared by its --parallel
    slots (each slot gets ctx_size / parallel), so the cache is sized by
    ctx_size alone. Models with sliding-window layers (Gemma 3) need less:
    this is an upper bound.
    """
    if server.kv_cache_gib is not None:
        return round(server.kv_cache_gib * GIB)
    dims = attention_dims(model)
    if dims is None:
        return None
    n_layers, n_kv_heads, head_dim = dims
    # K and V, for every layer and KV head, for every token of the context.
    return 2 * n_layers * n_kv_heads * head_dim * server.ctx_size * KV_BYTES_PER_ELEMENT


def budgeted(cfg: KittyConfig) -> dict[str, tuple[ModelServer, float]]:
    """Each server with a part on this host and that part: the enabled ones whole, a model split
    over llama.cpp RPC workers by this host's share (cfg.rpc, tasks/inference/rpc_workers.py: an even
    split, or --tensor-split's), on its main host and on each worker alike."""
    found = {name: (server, 1.0) for name, server in cfg.enabled_servers().items()}
    for name, use in cfg.rpc.items():
        if name in cfg.servers:
            found[name] = (cfg.servers[name], use.share)
    return found


def server_needs(cfg: KittyConfig) -> list[ServerNeed]:
    """What each enabled server needs; BudgetError naming every missing size or dimension."""
    needs, missing = [], []
    compute = round(cfg.macos.compute_gib * GIB)
    for name, (server, share) in budgeted(cfg).items():
        model = cfg.models[server.model]
        model_names = [server.model] + ([server.mmproj] if server.mmproj else [])
        weights = 0
        for model_name in model_names:
            for index, file in enumerate(cfg.models[model_name].files):
                size = file_bytes(file)
                if size is None:
                    missing.append(f"kitty_models.{model_name}.files[{index}]: give size or approx_gb")
                else:
                    weights += size
        kv_cache = kv_cache_bytes(model, server)
        if kv_cache is None:
            missing.append(
                f"kitty_servers.{name}: lock model {server.model!r} (lock_models.py reads its shape from the "
                "GGUF header), give n_layers, n_kv_heads and head_dim on it, or kv_cache_gib on the server"
            )
            kv_cache = 0
        # A split model: this host's layers, their KV cache, and compute buffers of its own.
        label = name if share == 1.0 else f"{name} ({share:.0%} via RPC)"
        # mlock wires the model's own weights (not the projector's, which llama.cpp's clip loads itself).
        locked = locked_bytes(cfg, server)
        needs.append(
            ServerNeed(
                label, server.model, round(weights * share), round(kv_cache * share), compute, round(locked * share)
            )
        )
    if missing:
        raise BudgetError("cannot size the GPU memory budget:\n" + "\n".join(f"  - {line}" for line in missing))
    return needs


MLOCK_MODES = ("mlock", "mmap+mlock")


def locked_bytes(cfg: KittyConfig, server: ModelServer) -> int:
    """The bytes a server's load mode locks in RAM: its model's files under an mlock mode, else 0."""
    if server.load_mode not in MLOCK_MODES:
        return 0
    return sum(file_bytes(file) or 0 for file in cfg.models[server.model].files)


def wired_limit_mb(cfg: KittyConfig, memory: int) -> int:
    """The limit the deploy sets: the configured one, or the whole memory less the reserve."""
    if cfg.macos.wired_limit_mb is not None:
        return cfg.macos.wired_limit_mb
    return (memory - round(cfg.macos.reserve_gib * GIB)) // MIB


def budget(cfg: KittyConfig, memory: int) -> Budget:
    limit_mb = wired_limit_mb(cfg, memory)
    if limit_mb <= 0:
        raise BudgetError(
            f"kitty_macos.reserve_gib ({cfg.macos.reserve_gib}) leaves nothing of the {_gib(memory)} GiB for the GPU"
        )
    if limit_mb * MIB > memory:
        raise BudgetError(
            f"kitty_macos.wired_limit_mb ({limit_mb}) is more than the Mac's memory ({memory // MIB} MiB)"
        )
    return Budget(needs=server_needs(cfg), limit=limit_mb * MIB, memory=memory)


def memory_facts() -> tuple[int, int | None]:
    """The Mac's memory in bytes and its current wired limit in MiB (None: this macOS has no such setting)."""
    values = host.get_fact(Sysctl, keys=[MEMSIZE, WIRED_LIMIT]) or {}
    memory = values.get(MEMSIZE)
    if not isinstance(memory, int) or memory <= 0:
        raise DeployError(f"{host.name}: could not read {MEMSIZE} from sysctl (got {memory!r})")
    current = values.get(WIRED_LIMIT)
    return memory, current if isinstance(current, int) else None


def mlock_warnings(cfg: KittyConfig, mlock_allowed: bool) -> list[str]:
    """Enabled servers whose mlock load mode will not lock here (Platform.mlock_allowed): llama.cpp
    warns "failed to mlock" and loads unlocked."""
    if mlock_allowed:
        return []
    return [
        f"kitty_servers.{name}.load_mode: {server.load_mode} on Linux locks nothing: the unit keeps the default "
        "RLIMIT_MEMLOCK (bench.py --data bench_load_modes=true says 'mlock refused'); none or mmap load the same"
        for name, server in cfg.enabled_servers().items()
        if server.load_mode in MLOCK_MODES
    ]


def check(cfg: KittyConfig, plat: Platform) -> Budget | None:
    """Stop the deploy, before any download or restart, when the enabled servers cannot fit."""
    for warning in context_warnings(cfg) + mlock_warnings(cfg, plat.mlock_allowed):
        logger.warning(f"{host.name}: {warning}")
    # The Mac's GPU shares its memory, up to the wired limit; a Linux GPU has its own.
    if not plat.is_mac:
        return None
    memory, _ = memory_facts()
    try:
        result = budget(cfg, memory)
    except BudgetError as error:
        raise BudgetError(f"{host.name}: {error}") from None
    if not result.fits:
        raise BudgetError(
            f"{host.name}: the enabled model servers do not fit in GPU memory\n"
            f"{result.table()}\n{result.verdict()}\n"
            "Run some on another inference host (its kitty_serves, README: several inference hosts), "
            "disable servers (kitty_servers.<name>.enabled: false), lower their ctx_size, "
            "or change kitty_macos.reserve_gib / wired_limit_mb."
        )
    return result


def _gib(value: int) -> str:
    return f"{value / GIB:.1f}"
