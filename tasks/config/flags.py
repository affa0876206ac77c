"""The flag tables: which llama-server flags the configuration's fields own, and which carry secrets.

The schema validates extra_args against them; tasks.inference.server_args builds the command
line. They live here, under the schema, so the schema needs nothing from the steps above it.
"""

from __future__ import annotations

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
    # Trace verbosity, where the server's load says where its GPU layers went (tasks/supervise/offload.py).
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


def flag_name(arg: str) -> str:
    """The canonical spelling of a command-line flag, as llama.cpp reads it."""
    name = arg.split("=", 1)[0]
    if name.startswith("--"):
        # llama.cpp accepts --n_gpu_layers for --n-gpu-layers (the manual uses it).
        name = name.replace("_", "-")
    return name
