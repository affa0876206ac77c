"""Tools that tests run on this machine (shells, linters): missing is a skip here, a failure in CI.

`.ci/setup` installs every one of them, so in CI (`CI` set, as `.ci/run` sets it)
a missing tool means the set-up is broken, and a test that quietly skipped or
dropped a shell would make the suite smaller without anyone noticing.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def require(*tools: str) -> None:
    """Skip the calling test when a tool is missing; fail it instead when `CI` is set."""
    missing = [tool for tool in tools if not shutil.which(tool)]
    if not missing:
        return
    message = f"{', '.join(missing)} not installed (.ci/setup installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"CI: {message}")
    pytest.skip(message)


def busybox_path(folder) -> str:
    """A folder holding busybox's applets and nothing else, for PATH: busybox's userland alone."""
    require("busybox")
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "sh").exists():
        subprocess.run(["busybox", "--install", "-s", str(folder)], check=True)
    return str(folder)


def executable(path, text: str):
    """A script at `path` (its folder made), executable: a stand-in for a tool a test runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path
