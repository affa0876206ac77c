"""GGUF model files at pinned revisions, sha256-verified once."""

from __future__ import annotations

from tasks.config import KittyConfig
from tasks.platform import Platform


def download(cfg: KittyConfig, plat: Platform) -> None:
    """Plans nothing yet: model download and verification (issue 5) is not implemented, so nothing is claimed either."""
