"""Derived names, once: launchd labels, systemd units, log files, the service user, state folders.

Everything that names a thing on the host from a server or program name is
here, so the deploy, the health table, the host suite and a later prune all
agree on what belongs to kitty-ops.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tasks.config import KittyConfig
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


def state_dir(cfg: KittyConfig) -> str:
    """What kitty-ops records on the host about what it did (never secrets)."""
    return f"{cfg.paths.opt_dir}/state"


def records_dir(cfg: KittyConfig) -> str:
    """One record per supervised program: what its running process was started with."""
    return f"{state_dir(cfg)}/supervise"


def wait_script(cfg: KittyConfig) -> str:
    return f"{cfg.paths.opt_dir}/wait-healthy.sh"
