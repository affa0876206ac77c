"""The llama-server command line of one model server, built from the validated config.

Both supervisors (launchd's ProgramArguments, systemd's ExecStart) run exactly
this list, so a flag is spelled in one place only. Flags as llama.cpp b11434
accepts them (common/arg.cpp).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from tasks import offload

if TYPE_CHECKING:
    from tasks.config import KittyConfig, ModelServer

# Every spelling of the flags a ModelServer field sets. extra_args may not
# repeat them: llama-server keeps the last one given, so a duplicate would
# silently override the field a reader sees in group_data.
MANAGED_FLAGS = {
    "--host": "host",
    "--port": "port",
    "-a": "alias",
    "--alias": "alias",
    "-m": "model",
    "--model": "model",
    "-mm": "mmproj",
    "--mmproj": "mmproj",
    "-c": "ctx_size",
    "--ctx-size": "ctx_size",
    "-t": "threads",
    "--threads": "threads",
    "-b": "batch_size",
    "--batch-size": "batch_size",
    "-ub": "ubatch_size",
    "--ubatch-size": "ubatch_size",
    "-np": "parallel",
    "--parallel": "parallel",
    "-ngl": "n_gpu_layers",
    "--gpu-layers": "n_gpu_layers",
    "--n-gpu-layers": "n_gpu_layers",
    "-fa": "flash_attn",
    "--flash-attn": "flash_attn",
    "--jinja": "jinja",
    "--no-jinja": "jinja",
    "--api-key-file": "api_key_file",
    "--metrics": "metrics",
    "-kvu": "kv_unified",
    "--kv-unified": "kv_unified",
    # Trace verbosity, where the server's load says where its GPU layers went (tasks/offload.py).
    "-lv": "n_gpu_layers",
    "--verbosity": "n_gpu_layers",
    "--log-verbosity": "n_gpu_layers",
    "-no-kvu": "kv_unified",
    "--no-kv-unified": "kv_unified",
    "--rpc": "rpc_workers",
    "-lm": "load_mode",
    "--load-mode": "load_mode",
    # A load mode as builds before --load-mode spelled it: the budget counts mlock as wired memory
    # only from the field, so these are refused in extra_args too.
    "--mlock": "load_mode",
    "--no-mmap": "load_mode",
    "--mmap": "load_mode",
    "-dio": "load_mode",
    "--direct-io": "load_mode",
}
# A key on the command line is visible to every local user (ps) and lands in
# the world-readable plist or unit. Every flag of b11434's common/arg.cpp whose
# value is a secret (--api-key-file and --ssl-key-file take a path, not a key).
SECRET_FLAGS = {"--api-key", "--hf-token", "-hft"}

SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


def flag_name(arg: str) -> str:
    """The canonical spelling of a command-line flag, as llama.cpp reads it."""
    name = arg.split("=", 1)[0]
    if name.startswith("--"):
        # llama.cpp accepts --n_gpu_layers for --n-gpu-layers (the manual uses it).
        name = name.replace("_", "-")
    return name


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
    # Where its layers go is in its load log only at trace verbosity (tasks/offload.py).
    return args + offload.arguments(server) + list(server.extra_args)


def rpc_endpoints(cfg: KittyConfig, name: str, server: ModelServer) -> list[str]:
    """`address:port` of each rpc-server the server uses, as tasks/rpc_workers.py resolved them
    from the inventory (the workers' own host data): never guessed from a host name here."""
    use = cfg.rpc.get(name)
    if use is None or len(use.endpoints) != len(server.rpc_workers):
        from tasks.config import ConfigError

        raise ConfigError(
            f"kitty_servers.{name}.rpc_workers: {', '.join(server.rpc_workers)} not resolved against the "
            "inventory (tasks/rpc_workers.placed)"
        )
    return list(use.endpoints)
