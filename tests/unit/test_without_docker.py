"""The README's test command on a machine without a Docker engine, and without CI set.

It skips every e2e and sim-Mac test (there is no host to converge), so it is
not the run CI makes: it must say so, loudly, at its end (conftest.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_run_without_docker_ends_saying_loudly_that_it_skipped_the_e2e_and_sim_mac_tests(tmp_path):
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "PYTEST_ADDOPTS")}
    # No docker on PATH: the engine cannot answer.
    env["PATH"] = str(Path(sys.executable).parent)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/e2e/test_verify.py",
         "tests/macsim/test_converge_smoke.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:]
    assert re.search(r"!+ \d+ e2e and simulated-Mac tests were SKIPPED !+", done.stdout), done.stdout[-2000:]
    assert "It is NOT the run CI makes" in done.stdout
