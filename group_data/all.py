"""The KITTY host of the operations manual, as data.

Every value here is a default for every host; override per group or with
`--data`. Values the manual does not give are None and say so in `note`.
Models name the revision a human wants (a branch, tag or commit); what it
resolved to on the Hub (commit, sizes, sha256, the GGUF's shape) is in
group_data/models.lock.json, written by `python lock_models.py`. The deploy
refuses to download a model the lock does not pin unless
`kitty_model_policy["allow_unpinned"]` is set.
"""

NOT_IN_MANUAL = "not given by the operations manual: lock it (lock_models.py) after checking the repository"

kitty_paths = {
    "kitty_root": "/Users/Shared/Coding/KITT",
    "models_dir": "/Users/Shared/Coding/models",
    "logs_dir": "/Users/Shared/Coding/KITT/.logs",
    "opt_dir": "/opt/kitty",
    # None: the SSH/admin user that runs the deploy.
    "service_user": None,
}

kitty_packages = {
    # Homebrew formulae on macOS (installed as the admin user, never as root), by their current
    # names: `huggingface-cli` is `hf` since homebrew-core renamed it.
    "brew": ["git", "cmake", "ccache", "hf", "colima", "docker", "docker-compose", "docker-buildx", "restic", "rclone"],
    # Debian/Ubuntu packages on Linux.
    "apt": [
        "git",
        "cmake",
        "build-essential",
        "ccache",
        "libssl-dev",
        "python3-venv",
        "curl",
        "ca-certificates",
        # Rotates the KITTY logs (tasks/system/logs.py); minimal Debian images lack it.
        "logrotate",
        # backup.py / restore.py's encrypted repository (tasks/runbook/restic.py).
        "restic",
        # backup.py / restore.py's copy of the S3 store's buckets (kitty_backup.s3_service).
        "rclone",
    ],
}

kitty_llamacpp = {
    "git_url": "https://github.com/ggml-org/llama.cpp.git",
    # The manual builds whatever `git pull` gives; the deploy builds this tag only.
    "ref": "b11434",
    "build_number": 11434,
    "backend": "auto",
    "cmake_options": {},
    "targets": ["llama-server"],
    "keep_builds": 3,
}

kitty_models = {
    "athene-v2-agent-q4": {
        "repo": "Nexesenex/Athene-V2-Agent-GGUF",
        "revision": "main",
        "dir": "athene-v2-agent",
        "kind": "text",
        # Athene-V2-Agent is a 72B model: its Q4_K_M is ~47 GB, not the manual's 15-20 GB.
        "files": [{"name": "Athene-V2-Agent-Q4_K_M.gguf", "approx_gb": 47.4, "sha256": None}],
        # Qwen2.5-72B's attention: 80 layers, 8 KV heads of 128 (for the KV cache budget).
        "n_layers": 80,
        "n_kv_heads": 8,
        "head_dim": 128,
        "note": f"Q4 tool orchestrator (manual step 3.3). revision/size/sha256 {NOT_IN_MANUAL}",
    },
    "llama-3.3-70b-f16": {
        "repo": "bartowski/Llama-3.3-70B-Instruct-GGUF",
        "revision": "main",
        "dir": "llama-3.3-70b-instruct-f16",
        "kind": "text",
        # Four shards per the manual (step 3.2); llama-server is given the first.
        "files": [
            {"name": f"Llama-3.3-70B-Instruct-f16/Llama-3.3-70B-Instruct-f16-0000{i}-of-00004.gguf", "approx_gb": 35.3}
            for i in range(1, 5)
        ],
        "n_layers": 80,
        "n_kv_heads": 8,
        "head_dim": 128,
        "note": f"F16 reasoning engine (manual step 3.4), ~141 GB. repo/revision/sha256 {NOT_IN_MANUAL}",
    },
    "hermes-summary": {
        "repo": "NousResearch/Hermes-3-Llama-3.1-8B-GGUF",
        "revision": "main",
        "dir": "hermes-3-llama-3.1-8b",
        "kind": "text",
        "files": [{"name": "Hermes-3-Llama-3.1-8B.Q4_K_M.gguf", "approx_gb": 4.9}],
        "n_layers": 32,
        "n_kv_heads": 8,
        "head_dim": 128,
        "note": f"Hermes 8B summarizer (manual step 3.5). The manual names no file: repo/file {NOT_IN_MANUAL}",
    },
    "gemma-3-27b-vision": {
        "repo": "bartowski/google_gemma-3-27b-it-GGUF",
        "revision": "main",
        "dir": "gemma-3-27b-it-GGUF",
        "kind": "vision",
        "files": [{"name": "google_gemma-3-27b-it-Q4_K_M.gguf", "approx_gb": 16.5}],
        # 5 of every 6 layers use a 1024-token sliding window: the budget's full-context KV is an upper bound.
        "n_layers": 62,
        "n_kv_heads": 16,
        "head_dim": 128,
        "note": f"Gemma 3 27B vision (manual step 3.5). revision/sha256 {NOT_IN_MANUAL}",
    },
    "gemma-3-27b-mmproj": {
        "repo": "bartowski/google_gemma-3-27b-it-GGUF",
        "revision": "main",
        "dir": "gemma-3-27b-it-GGUF",
        "kind": "mmproj",
        "files": [{"name": "mmproj-google_gemma-3-27b-it-bf16.gguf", "approx_gb": 0.86}],
        "note": f"Vision projector, 818 MB per the manual. revision/sha256 {NOT_IN_MANUAL}",
    },
}

kitty_model_policy = {
    "allow_unpinned": False,
    "verify": "stamp",
    "delete_unreferenced": False,
    # What lock_models.py resolved kitty_models to; relative to the project.
    "lock_file": "group_data/models.lock.json",
}

kitty_servers = {
    "q4": {
        "model": "athene-v2-agent-q4",
        "port": 8083,
        "alias": "kitty-q4",
        "ctx_size": 16384,
        "threads": 20,
        "batch_size": 4096,
        "ubatch_size": 1024,
        "parallel": 4,
        "n_gpu_layers": 999,
        # Read into Metal's buffers, not mmap'd: ~9x faster loads on Apple Silicon (README, Model load speed).
        "load_mode": "none",
        "flash_attn": "on",
        "jinja": True,
        "health_timeout": 300,
    },
    "f16": {
        "model": "llama-3.3-70b-f16",
        "port": 8082,
        "alias": "kitty-f16",
        "ctx_size": 16384,
        "threads": 20,
        "batch_size": 4096,
        "ubatch_size": 1024,
        "parallel": 4,
        "n_gpu_layers": 999,
        # Read into Metal's buffers, not mmap'd: ~9x faster loads on Apple Silicon (README, Model load speed).
        "load_mode": "none",
        "flash_attn": "on",
        "jinja": True,
        # The manual measures 5m30s for a first load of the 140 GB model.
        "health_timeout": 900,
    },
    "summary": {
        "model": "hermes-summary",
        "port": 8085,
        "alias": "kitty-summary",
        "optional": True,
        "ctx_size": 8192,
        "threads": 12,
        "batch_size": 1024,
        "parallel": 2,
        "n_gpu_layers": 999,
        # Read into Metal's buffers, not mmap'd: ~9x faster loads on Apple Silicon (README, Model load speed).
        "load_mode": "none",
        "health_timeout": 300,
    },
    "vision": {
        "model": "gemma-3-27b-vision",
        "mmproj": "gemma-3-27b-mmproj",
        "port": 8086,
        "alias": "kitty-vision",
        "optional": True,
        "ctx_size": 8192,
        "threads": 16,
        "n_gpu_layers": 999,
        # Read into Metal's buffers, not mmap'd: ~9x faster loads on Apple Silicon (README, Model load speed).
        "load_mode": "none",
        "health_timeout": 400,
    },
}

# How the model servers run on macOS (see tasks/supervise/launchd.py).
kitty_launchd = {
    # "daemon": a LaunchDaemon in the system domain, which runs on a headless Mac
    # reached over SSH. "agent": a LaunchAgent in the admin's GUI session (gui/<uid>:
    # automatic login, FileVault off), where Metal has a device when a daemon's has
    # none (the health table then says "degraded: on CPU"; see README, Safe changes).
    "kind": "daemon",
    "label_prefix": "com.kitty.llama-server.",
    "throttle_interval": 10,
}

# A fresh Mac made server-ready (tasks/system/macos.py) and its GPU memory budget (tasks/system/memory_budget.py).
kitty_macos = {
    # Missing Xcode Command Line Tools: "install" (unattended, via softwareupdate) or "stop".
    "command_line_tools": "install",
    # AC power profile: never sleep (display sleep is left alone), restart after a
    # power failure, wake on network access.
    "pmset": {"sleep": 0, "autorestart": 1, "womp": 1},
    # None: the whole memory less reserve_gib (a 192 GiB Mac: 168 GiB, 172032 MiB).
    "wired_limit_mb": None,
    # Kept back for macOS and the container VM of the application stack.
    "reserve_gib": 24,
    # Per model server, for llama.cpp's compute buffers.
    "compute_gib": 1.5,
    # FileVault on: after a power cut the Mac waits at the unlock screen and no LaunchDaemon
    # starts, whatever autorestart says. "warn" (plan and health table), "refuse", "ignore".
    "filevault": "warn",
}

kitty_stack = {
    "enabled": True,
    "repo_url": "git@github.com:kitty/KITT.git",
    # A tag or commit. None: not pinned (the manual runs whatever is checked out):
    # cloned once at the default branch, then never moved by the deploy.
    "ref": None,
    "compose_file": "infra/compose/docker-compose.yml",
    "env_file": ".env",
    "project_name": "kitty",
    # auto: colima on macOS (headless, no GUI login, MIT licence; a LaunchDaemon keeps
    # it up across reboots), the Docker engine on Linux. "docker-desktop" or
    # "orbstack" if you run those (checked, not managed).
    "runtime": "auto",
    # The Linux VM of the containers; the model servers run natively, outside it.
    "colima": {"cpu": 4, "memory_gib": 8, "disk_gib": 100, "profile": "default"},
    "runtime_timeout": 300,
    # colima and Docker Desktop resolve host.docker.internal to the Mac's own
    # loopback, where the llama-servers listen: no extra_hosts needed there.
    "model_host": "host.docker.internal",
    "extra_hosts": {},
    "services": {
        "brain": {"port": 8000, "health": "/health", "health_timeout": 180},
        "gateway": {"port": 8080, "health": "/health"},
        "cad": {"port": 8200, "health": "/health"},
        "fabrication": {"port": 8300, "health": "/health"},
        "safety": {"port": 8400, "health": "/health"},
        "voice": {},
        "ui": {"port": 4173, "health": "/"},
        "redis": {"port": 6379, "health": "redis"},
        "postgres": {"port": 5432, "health": "postgres"},
        "minio": {"port": 9000, "health": "/minio/health/live"},
        "mosquitto": {"port": 1883},
    },
    "env": {"OFFLINE_MODE": "true"},
    # Names only. Values: the operator's environment (same name) or else
    # secrets_file on the controller (NAME=value lines, git-ignored, keep it 0600).
    "secrets_file": "secrets.env",
    "secrets": [
        "ADMIN_USERS",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "PERPLEXITY_API_KEY",
        "ZOO_API_KEY",
        "TRIPO_API_KEY",
        # MinIO's keys: its container's, and backup.py's to copy the buckets (kitty_backup).
        "MINIO_ROOT_USER",
        "MINIO_ROOT_PASSWORD",
    ],
}

# The manual's optional Stable Diffusion service (phase 5, tasks/app/images.py): an RQ
# worker and a uvicorn API, each supervised (systemd or a LaunchDaemon), after Redis.
kitty_images = {
    "enabled": False,
    "port": 8089,
    # In the app checkout; the venv is <path>/.venv.
    "path": "services/images_service",
    # Relative to path; reinstalled only when it changes.
    "requirements": "requirements.txt",
    "python": "python3",
    # The kitty_stack service the worker's queue lives in (redis://127.0.0.1:<its port>/0).
    "redis_service": "redis",
    "queue": "images",
    # Seconds for GET / to answer after a (re)start: loading SDXL takes 2-3 minutes.
    "health_timeout": 300,
}

# The host test suite (tests/host). The health table that ends every converge needs no settings.
kitty_verify = {
    # The manual's end-to-end query through the brain (step 6.2): off, it runs a real model query.
    "query": False,
    "query_service": "brain",
    "query_timeout": 60,
}

# backup.py / restore.py (tasks/runbook/backup.py, tasks/runbook/restore.py): a restic repository of the
# stack's data. The restic password is the secret KITTY_BACKUP_PASSWORD (environment or
# kitty_stack.secrets_file), never here.
kitty_backup = {
    # None: <opt_dir>/backup/repo on the host; any restic location, e.g. sftp:admin@laptop:/backups/kitty.
    "repository": None,
    "postgres_service": "postgres",
    "redis_service": "redis",
    # Every bucket of MinIO, through its S3 API on the host's loopback (its published port),
    # with the keys of the secrets named here (listed in kitty_stack.secrets).
    "s3_service": "minio",
    "s3_endpoint": None,
    "s3_access_key_secret": "MINIO_ROOT_USER",
    "s3_secret_key_secret": "MINIO_ROOT_PASSWORD",
    # e.g. "20M": the bucket copies leave the running services their bandwidth.
    "s3_bwlimit": None,
    "keep_last": 7,
    "keep_daily": 7,
    "keep_weekly": 4,
    "keep_monthly": 6,
}
