"""The wings' import contract (.importlinter) holds, and a wrong import breaks it (issue 24)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True, env={"PYTHONPATH": str(root)}
    )


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "tasks", tmp_path / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_the_tree_keeps_the_contract(scratch):
    result = lint(scratch)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "wrong", "broken"),
    [
        # The plumbing reaching up into a chapter of the manual.
        ("engine/operations.py", "from tasks.runbook import verify", "Wings import downwards only"),
        # Configuration depending on a step.
        ("config/placement.py", "from tasks.inference import servers", "Wings import downwards only"),
        # A step speaking launchd itself instead of asking tasks.supervise.
        ("app/images.py", "from tasks.supervise import launchd", "Only tasks.supervise speaks launchd or systemd"),
        # Two step wings importing each other.
        ("inference/metrics.py", "from tasks.app import stack", "do not import each other in a circle"),
    ],
)
def test_a_wrong_import_breaks_it(scratch, module, wrong, broken):
    path = scratch / "tasks" / module
    path.write_text(path.read_text() + f"\n{wrong}  # noqa\n")
    result = lint(scratch)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout and "BROKEN" in result.stdout
