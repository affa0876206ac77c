"""A brand-new sandbox host per test session, converged over SSH like a remote Mac.

Needs a Docker engine (`.ci/setup` starts one). The sandbox is removed at the
end, along with its state under .sandbox/<name>; images stay as a build cache.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from sandbox import converge as sandbox_converge

NAME = "kitty-e2e"
PORT = 2223


def pytest_collection_modifyitems(config, items):
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return
    skip = pytest.mark.skip(reason="no Docker engine: run `bash .ci/setup` first")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sandbox():
    sandbox_converge.ensure_sandbox(NAME, PORT, fresh=True)
    yield NAME
    subprocess.run([*sandbox_converge.SANDBOX, "stop", "--name", NAME], check=False)
    sandbox_converge.stop_mirrors()
