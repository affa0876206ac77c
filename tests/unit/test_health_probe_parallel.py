"""The health table's probe runs its checks at once (tasks/runbook/verify.py), under every shell a host may have."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tasks.runbook import verify

SHELLS = [s for s in (["sh"], ["dash"], ["bash"], ["busybox", "sh"]) if shutil.which(s[0])]


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_slow_checks_take_as_long_as_the_slowest_and_answer_in_order(shell):
    checks = [verify.Check("stack", f"slow{i}", None, "command", f"sleep 1; exit {i % 2}", "logs") for i in range(4)]
    start = time.monotonic()
    out = subprocess.run([*shell, "-c", verify.probe_command(checks)], capture_output=True, text=True, timeout=30)
    took = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    found = verify.parse(out.stdout.splitlines())
    assert list(found) == [f"stack slow{i}" for i in range(4)]
    assert [found[f"stack slow{i}"][0] for i in range(4)] == ["ok", "failed", "ok", "failed"]
    # One after the other this is 4 s.
    assert took < 2.5, took


def test_no_checks_is_still_a_command_that_answers_nothing():
    out = subprocess.run(["sh", "-c", verify.probe_command([])], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and out.stdout == ""
