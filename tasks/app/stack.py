"""The KITTY application stack: a container runtime, the app checkout, a secrets-safe .env, compose.

    runtime.py    colima under launchd (macOS, no GUI login needed), or the Linux
                  Docker engine, or an engine that already answers; then `docker info`
    checkout.py   the app repository at the pinned ref, into kitty_root
    secrets.py    the .env from templates/kitty.env.j2, mode 0600; secrets from the
                  operator's environment or a git-ignored file on the controller
    compose.py    compose's tools; `up -d` only when compose's own state or an input
                  file differs; then each service's health

A converged host plans nothing here, and compose recreates only the services
whose configuration changed.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Home

from tasks.app import checkout, compose, runtime, secrets
from tasks.config import KittyConfig
from tasks.host.platform import Platform


@deploy("Application stack")
def up(cfg: KittyConfig, plat: Platform) -> None:
    """Bring the stack to its wanted state."""
    if not cfg.stack.enabled:
        return
    kind = runtime.runtime_of(cfg.stack, plat)
    home = host.get_fact(Home) if kind == "colima" else None
    docker = compose.Docker(cfg, plat, kind, home)

    installed = [*runtime.install(cfg, plat, kind, home), *compose.plugin(cfg, plat, kind)]
    compose.brew_plugins_found(plat, kind, home)
    runtime_changed = runtime.start(cfg, plat, kind, docker, installed)

    app = checkout.app(cfg, plat)
    inputs = [app, secrets.env_file(cfg, plat), *compose.override(cfg, plat)]
    compose.up(cfg, docker, runtime_changed=runtime_changed, inputs=inputs)
