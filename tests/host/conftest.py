"""The host test suite: run against a real KITTY host over SSH, or locally on it.

    pytest tests/host --hosts=ssh://admin@studio.local [--junitxml=reports/host.xml] [-m inference|application]

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


def _load() -> config.KittyConfig:
    return config.load(config.read_group_data(*_group_data_dirs()))


@pytest.fixture(scope="session")
def kitty() -> config.KittyConfig:
    return _load()


def pytest_configure(config):
    config.addinivalue_line("markers", "inference: model servers (select a role's checks with -m)")
    config.addinivalue_line("markers", "application: the application stack")


def pytest_generate_tests(metafunc):
    """One test per enabled model server (`server`) and stack service (`service`), named after it."""
    if "server" in metafunc.fixturenames:
        metafunc.parametrize("server", list(_load().enabled_servers()))
    if "service" in metafunc.fixturenames:
        cfg = _load()
        if cfg.stack.enabled:
            metafunc.parametrize("service", list(cfg.stack.services))
        else:
            skip = pytest.mark.skip(reason="kitty_stack.enabled is False: no application stack to check")
            metafunc.parametrize("service", [pytest.param(None, marks=skip, id="stack-disabled")])


@pytest.fixture(scope="module")
def is_macos(host) -> bool:
    return host.system_info.type == "darwin"
