"""What the simulated Mac (sandbox/macsim) differs in from the Mac of the manual.

Loaded after group_data/ with `--group-data sandbox/macsim/group_data`: each name here
replaces the default of the same name whole. Mac paths stay the defaults; the sim Mac has
/Users/Shared (1777) as a Mac does, and the admin creates the rest with sudo.

Offline: the Command Line Tools and Homebrew (with kitty-ops' formulae) are present; the
llama.cpp build is seeded (tests/macsim/harness.py SimMac.seed_build: no cmake, no
sources); `hf` writes small deterministic fake GGUF files whose revision and sha256 are
pinned below from the same function (sandbox/macsim/fake_gguf.py). The power settings are
those of a fresh Mac, so a first converge sets them.
"""

import importlib.util as _importlib_util
from pathlib import Path as _Path

_spec = _importlib_util.spec_from_file_location(
    "_macsim_fake_gguf", _Path(__file__).resolve().parents[1] / "fake_gguf.py"
)
_fake = _importlib_util.module_from_spec(_spec)
_spec.loader.exec_module(_fake)


def _model(repo, name, directory):
    revision = _fake.revision_of(repo)
    return {
        "repo": repo,
        "revision": revision,
        "dir": directory,
        "kind": "text",
        "files": [{"name": name, "size": _fake.SIZE, "sha256": _fake.sha256(repo, revision, name)}],
        # A tiny model's attention, for the GPU memory budget.
        "n_layers": 30,
        "n_kv_heads": 3,
        "head_dim": 64,
    }


kitty_llamacpp = {
    "git_url": "https://github.com/ggml-org/llama.cpp.git",
    "ref": "b11434",
    "build_number": 11434,
    "backend": "auto",
    "cmake_options": {},
    "targets": ["llama-server"],
    "keep_builds": 3,
}

kitty_models = {
    "tiny-q4": _model("kitty-test/tiny-q4-GGUF", "tiny-q4.Q4_K_M.gguf", "tiny-q4"),
    "tiny-summary": _model("kitty-test/tiny-summary-GGUF", "tiny-summary.Q4_K_M.gguf", "tiny-summary"),
}

kitty_model_policy = {
    "allow_unpinned": False,
    "verify": "stamp",
    "delete_unreferenced": False,
    # The sim Mac is offline: its `hf` stand-in writes the files; there is no Hub for curl to reach.
    "downloader": "hf",
}

# Two servers on the sim Mac's own loopback (its own network namespace).
kitty_servers = {
    "q4": {
        "model": "tiny-q4",
        "port": 8083,
        "alias": "kitty-q4",
        "ctx_size": 2048,
        "threads": 2,
        "batch_size": 512,
        "ubatch_size": 256,
        "parallel": 2,
        "n_gpu_layers": 999,
        "flash_attn": "auto",
        # As the manual's servers (README, Model load speed); summary keeps the build's default.
        "load_mode": "none",
        "jinja": True,
        "health_timeout": 30,
    },
    "summary": {
        "model": "tiny-summary",
        "port": 8085,
        "alias": "kitty-summary",
        "optional": True,
        "ctx_size": 1024,
        "threads": 1,
        "batch_size": 256,
        "parallel": 1,
        "n_gpu_layers": 999,
        "health_timeout": 30,
    },
}

kitty_launchd = {
    "kind": "daemon",
    "label_prefix": "com.kitty.llama-server.",
    # Small: a crashed server comes back within the test's patience.
    "throttle_interval": 1,
}

# Only the settings: not the helpers above.
__all__ = ["kitty_llamacpp", "kitty_models", "kitty_model_policy", "kitty_servers", "kitty_launchd"]
