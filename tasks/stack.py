"""Container runtime, application checkout, secrets-safe .env, docker compose."""

from __future__ import annotations

from tasks.config import KittyConfig
from tasks.platform import Platform


def up(cfg: KittyConfig, plat: Platform) -> None:
    """Plans nothing yet: the application stack (issue 7) is not implemented, so nothing is claimed either."""
