"""The llama-server command line of one model server, built from the validated config.

Both supervisors (launchd's ProgramArguments, systemd's ExecStart) run exactly
this list, so a flag is spelled in one place only. Flags as llama.cpp b11434
accepts them (common/arg.cpp).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tasks.supervise import offload

if TYPE_CHECKING:
    from tasks.config import KittyConfig, ModelServer

SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


def model_path(cfg: KittyConfig, model_name: str, models_dir: str) -> str:
    """The file llama-server is given: the only file, or the first shard of a split model."""
    model = cfg.models[model_name]
    names = [file.name for file in model.files]
    shards = [name for name in names if SHARD.search(name)]
    # llama.cpp finds the other shards next to the first one.
    first = min(shards, key=lambda name: int(SHARD.search(name).group(1))) if shards else names[0]
    return f"{models_dir.rstrip('/')}/{model.dir}/{first}"


def arguments(cfg: KittyConfig, name: str, server: ModelServer, binary: str, models_dir: str) -> list[str]:
    """argv of the llama-server for `cfg.servers[name]`, binary first."""
    args = [
        binary,
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--alias",
        server.alias,
        "--model",
        model_path(cfg, server.model, models_dir),
    ]
    if server.mmproj is not None:
        args += ["--mmproj", model_path(cfg, server.mmproj, models_dir)]
    args += ["--ctx-size", str(server.ctx_size), "--threads", str(server.threads)]
    if server.batch_size is not None:
        args += ["--batch-size", str(server.batch_size)]
    if server.ubatch_size is not None:
        args += ["--ubatch-size", str(server.ubatch_size)]
    args += ["--parallel", str(server.parallel), "--n-gpu-layers", str(server.n_gpu_layers)]
    if server.flash_attn is not None:
        args += ["--flash-attn", server.flash_attn]
    if server.load_mode is not None:
        args += ["--load-mode", server.load_mode]
    # Prometheus-format counters at GET /metrics (llama-server keeps them off unless asked).
    if server.metrics:
        args.append("--metrics")
    # Without it, --parallel N splits --ctx-size into N slots of ctx/N tokens each.
    if server.kv_unified:
        args.append("--kv-unified")
    # llama-server's default flipped to jinja-on after the manual was written
    # (b11434 has --jinja/--no-jinja, default on): say it either way, so the
    # manual's servers without --jinja keep the behaviour they had.
    args.append("--jinja" if server.jinja else "--no-jinja")
    if server.api_key_file is not None:
        args += ["--api-key-file", server.api_key_file]
    if server.rpc_workers:
        args += ["--rpc", ",".join(rpc_endpoints(cfg, name, server))]
    # Where its layers go is in its load log only at trace verbosity (tasks/supervise/offload.py).
    return args + offload.arguments(server) + list(server.extra_args)


def rpc_endpoints(cfg: KittyConfig, name: str, server: ModelServer) -> list[str]:
    """`address:port` of each rpc-server the server uses, as tasks/inference/rpc_workers.py resolved them
    from the inventory (the workers' own host data): never guessed from a host name here."""
    use = cfg.rpc.get(name)
    if use is None or len(use.endpoints) != len(server.rpc_workers):
        from tasks.config import ConfigError

        raise ConfigError(
            f"kitty_servers.{name}.rpc_workers: {', '.join(server.rpc_workers)} not resolved against the "
            "inventory (tasks/config/rpc_placement.py)"
        )
    return list(use.endpoints)
