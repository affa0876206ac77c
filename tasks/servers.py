"""One supervised llama-server per enabled model server, health-gated."""

from __future__ import annotations

from tasks.config import KittyConfig
from tasks.platform import Platform


def run(cfg: KittyConfig, plat: Platform) -> None:
    """Plans nothing yet: the model servers (issue 6) is not implemented, so nothing is claimed either."""
