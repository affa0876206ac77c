"""The health table that ends every converge."""

from __future__ import annotations

from tasks.config import KittyConfig
from tasks.platform import Platform


def report(cfg: KittyConfig, plat: Platform) -> None:
    """Plans nothing yet: the health table (issue 8) is not implemented, so nothing is claimed either."""
