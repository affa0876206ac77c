"""In CI, every tool and file the unit tests use is there: no test can quietly shrink.

Some tests run a host script once per shell that is installed, or skip when a
tool or the tiny model is missing: on a machine without them the suite is
smaller, and still green. `.ci/setup` installs all of them (and extracts the
tiny model), so with `CI` set each one missing is a failure here; elsewhere it
is a skip that says what is missing. `.ci/no_skipped.py` fails CI on any skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tools import require

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {
    "dash": "host scripts and fact commands as POSIX sh (test_host_scripts, test_fact_shell, ...)",
    "busybox": "a second, non-GNU userland for the same",
    "bash": "bash --posix, and the fact shell under bash",
    "zsh": "macOS's default login shell, which runs every fact's command on a Mac",
    "shellcheck": "the host scripts are shellcheck-clean as POSIX sh",
    "systemd-analyze": "units verified by systemd itself (test_hardening_schema)",
    "curl": "wait-healthy.sh and the health probes",
    "git": "llama-build.sh and the git ref fact",
    "perl": "the bench probes (test_bench)",
}
TINY_MODEL = ROOT / ".sandbox" / "cache" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_the_tool_is_installed(tool):
    require(tool)


def test_the_tiny_model_is_prepared():
    if TINY_MODEL.exists():
        return
    message = f"{TINY_MODEL.relative_to(ROOT)} is missing: `.venv/bin/python sandbox/hf-mirror.py model` makes it"
    if os.environ.get("CI"):
        pytest.fail(f"CI: {message} (.ci/setup runs it)")
    pytest.skip(message)
