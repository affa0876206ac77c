"""Derived names, once: launchd labels, systemd units, log files, the service user, and every
folder and file kitty-ops makes or reads on a host from kitty_paths (llama.cpp's builds and
`current`, model stamps, the Hub CLI's folder, API keys, the RPC cache, the backup folder,
colima's wrapper, the app's .env, compose override, images venv and Prometheus targets).

Everything that names a thing on the host from the configuration or a server or program
name is here, so the deploy, the health table, the chapters, the host suite and a later
prune all agree on what belongs to kitty-ops. The components keep only the names inside a
folder named here that nobody else reads (a build's bin/, restic's repository in the backup
folder, a file of the Hub's folder). A model file's own path is the models lock's
(tasks/inference/server_args.py `model_path`), under kitty_paths.models_dir.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.config import KittyConfig, Model, ModelFile
    from tasks.host.platform import Platform

LAUNCH_DAEMONS = "/Library/LaunchDaemons"
SYSTEMD_UNITS = "/etc/systemd/system"

# The model servers: `kitty_launchd.label_prefix` + name, kitty-llama-<name>.service.
SERVER_UNIT_PREFIX = "kitty-llama-"
# The images service's two programs.
IMAGES_LABEL_PREFIX = "com.kitty.images."
IMAGES_UNIT_PREFIX = "kitty-images-"
# Runs colima's VM at boot (macOS).
COLIMA_LABEL = "com.kitty.colima"
# Sets iogpu.wired_limit_mb at every boot (macOS).
WIRED_LIMIT_LABEL = "com.kitty.iogpu-wired-limit"
# llama.cpp's rpc-server on a worker host (one per host): a prefix of itself, so a family.
RPC_WORKER_LABEL = "com.kitty.rpc-server"
RPC_WORKER_UNIT = "kitty-rpc-server.service"
# Our compose override, in the checkout next to the .env.
COMPOSE_OVERRIDE = ".kitty-ops.compose.json"


def service_user(cfg: KittyConfig, plat: Platform) -> str:
    """Who the model servers and the images service run as: the configured account, else the deploying admin."""
    return cfg.paths.service_user or plat.user


def server_label(cfg: KittyConfig, name: str) -> str:
    return f"{cfg.launchd.label_prefix}{name}"


def server_unit(name: str) -> str:
    return f"{SERVER_UNIT_PREFIX}{name}.service"


def server_log(cfg: KittyConfig, name: str) -> str:
    # The manual's names: .logs/llamacpp-q4.log, ...
    return f"{cfg.paths.logs_dir}/llamacpp-{name}.log"


def rpc_worker_log(cfg: KittyConfig) -> str:
    return f"{cfg.paths.logs_dir}/rpc-server.log"


def rpc_state(cfg: KittyConfig, server: str) -> str:
    """What the rpc-servers a split server uses run (one line): an input of that server."""
    return f"{state_dir(cfg)}/rpc/{server}.workers"


def images_label(program: str) -> str:
    return f"{IMAGES_LABEL_PREFIX}{program}"


def images_unit(program: str) -> str:
    return f"{IMAGES_UNIT_PREFIX}{program}.service"


def images_log(cfg: KittyConfig, program: str) -> str:
    # The manual's log names: .logs/rq_worker.log (the worker) and .logs/service.log (the API).
    return f"{cfg.paths.logs_dir}/{'rq_worker' if program == 'worker' else 'service'}.log"


def state_dir(cfg: KittyConfig) -> str:
    """What kitty-ops records on the host about what it did (never secrets)."""
    return f"{cfg.paths.opt_dir}/state"


def records_dir(cfg: KittyConfig) -> str:
    """One record per supervised program: what its running process was started with."""
    return f"{state_dir(cfg)}/supervise"


def wait_script(cfg: KittyConfig) -> str:
    return f"{cfg.paths.opt_dir}/wait-healthy.sh"


# --- What kitty-ops makes under kitty_paths ------------------------------------------------


def llamacpp_dir(cfg: KittyConfig) -> str:
    """llama.cpp's source, its builds and `current` (tasks/inference/llamacpp.py)."""
    return f"{cfg.paths.opt_dir}/llama.cpp"


def llamacpp_build(cfg: KittyConfig, build_id: str) -> str:
    return f"{llamacpp_dir(cfg)}/builds/{build_id}"


def llamacpp_current(cfg: KittyConfig) -> str:
    """The link to the build the model servers and rpc-server execute."""
    return f"{llamacpp_dir(cfg)}/current"


def llamacpp_smoke_log(cfg: KittyConfig, build_id: str) -> str:
    return f"{cfg.paths.logs_dir}/llama.cpp-smoke-{build_id}.log"


def model_stamp(cfg: KittyConfig, model: Model, file: ModelFile) -> str:
    """Where the stamp of a verified model file is (sha256 size mtime): a server's input, read by its record."""
    return f"{cfg.paths.models_dir}/{model.dir}/.kitty/{file.name}.stamp"


def hf_dir(cfg: KittyConfig) -> str:
    """The Hugging Face CLI's folder: its venv (Linux), the token file, the Hub's cache home."""
    return f"{cfg.paths.opt_dir}/hf"


def keys_dir(cfg: KittyConfig) -> str:
    """The one folder of the model servers' API keys the deploy makes and owns on a host."""
    return f"{cfg.paths.opt_dir.rstrip('/')}/keys"


def prometheus_keys_dir(cfg: KittyConfig) -> str:
    """Prometheus's own copies of the keyed servers' keys (kitty_metrics.keys_dir)."""
    return cfg.metrics.keys_dir or f"{cfg.paths.opt_dir.rstrip('/')}/prometheus-keys"


def rpc_cache_dir(cfg: KittyConfig) -> str:
    # rpc-server's --cache goes to $LLAMA_CACHE/rpc: a folder the deploy owns, not the service user's home.
    return f"{cfg.paths.opt_dir}/rpc-cache"


def backup_dir(cfg: KittyConfig) -> str:
    """restic's repository, cache and work folder (kitty_backup.folder)."""
    return cfg.backup.folder or f"{cfg.paths.opt_dir}/backup"


def colima_wrapper(cfg: KittyConfig) -> str:
    return f"{cfg.paths.opt_dir}/colima-start.sh"


def colima_log(cfg: KittyConfig) -> str:
    return f"{cfg.paths.logs_dir}/colima.log"


# --- In the app checkout (kitty_root) -------------------------------------------------------


def app_head(cfg: KittyConfig) -> str:
    """The checkout's HEAD: detached, the commit it is at (an input of the images service)."""
    return f"{cfg.paths.kitty_root}/.git/HEAD"


def env_file(cfg: KittyConfig) -> str:
    """The app's .env (kitty_stack.env_file), 0600."""
    return f"{cfg.paths.kitty_root}/{cfg.stack.env_file}"


def compose_file(cfg: KittyConfig) -> str:
    """The app's compose file (kitty_stack.compose_file)."""
    return f"{cfg.paths.kitty_root}/{cfg.stack.compose_file}"


def compose_override(cfg: KittyConfig) -> str:
    """Our compose override next to the .env (extra_hosts, the host network): tasks/app/compose.py."""
    return f"{cfg.paths.kitty_root}/{COMPOSE_OVERRIDE}"


def images_dir(cfg: KittyConfig) -> str:
    """The images service's folder in the checkout (kitty_images.path)."""
    return f"{cfg.paths.kitty_root}/{cfg.images.path}"


def images_venv(cfg: KittyConfig) -> str:
    return f"{images_dir(cfg)}/.venv"


def metrics_targets(cfg: KittyConfig) -> str:
    """Prometheus's file_sd list of the model servers (kitty_metrics.targets_file)."""
    return cfg.metrics.targets_file or f"{cfg.paths.kitty_root}/infra/prometheus/targets/kitty-llama-servers.json"


def metrics_jobs(cfg: KittyConfig) -> str:
    """The scrape jobs that read the targets file, beside it (tasks/inference/metrics.py)."""
    return f"{metrics_targets(cfg).rpartition('/')[0]}/kitty-llama-scrape.yml"
