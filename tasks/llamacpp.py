"""llama.cpp built from the pinned ref, installed side by side with a `current` link."""

from __future__ import annotations

from tasks.config import KittyConfig
from tasks.platform import Platform


def build(cfg: KittyConfig, plat: Platform) -> None:
    """Plans nothing yet: the llama.cpp build (issue 4) is not implemented, so nothing is claimed either."""
