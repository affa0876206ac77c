"""The host test suite: run against a real KITTY host over SSH, or locally on it.

    pytest tests/host --hosts=ssh://admin@studio.local [--junitxml=reports/host.xml]

It reads the same group data as the deploy (group_data/, then the
directories in KITTY_GROUP_DATA, colon separated), so there is no second
list of ports or packages to keep in step.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks import config

ROOT = Path(__file__).resolve().parents[2]


def _group_data_dirs() -> list[str]:
    extra = [d for d in os.environ.get("KITTY_GROUP_DATA", "").split(":") if d]
    return [str(ROOT / "group_data"), *extra]


@pytest.fixture(scope="session")
def kitty() -> config.KittyConfig:
    return config.load(config.read_group_data(*_group_data_dirs()))


@pytest.fixture(scope="module")
def is_macos(host) -> bool:
    return host.system_info.type == "darwin"
