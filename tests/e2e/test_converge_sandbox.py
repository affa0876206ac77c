"""Converge a fresh sandbox host over SSH: the second converge changes nothing; the host suite passes."""

import pytest

from sandbox.converge import verify
from tests import skip_guard
from tests.e2e.conftest import converge

pytestmark = pytest.mark.e2e


def test_first_converge_installs_builds_downloads_and_starts(first_converge):
    changed = first_converge.changed
    assert "Prerequisites | Install apt packages" in changed
    assert "llama.cpp | Build llama.cpp b11434 (cpu)" in changed
    assert "Model files | Fetch smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf" in changed
    assert {"Model servers | server q4: install (new)", "Model servers | server summary: install (new)"} <= set(changed)
    assert "Model servers | Wait for /health of the model servers: server q4, server summary" in changed


def test_second_converge_changes_nothing(sandbox, first_converge):
    result = converge(sandbox)
    assert result.code == 0
    assert result.changed == []
    assert result.results["results"]["totals"]["success"] == 0 and result.results["results"]["totals"]["error"] == 0


def test_host_suite_passes_over_ssh(sandbox, first_converge, tmp_path):
    report = tmp_path / "host.xml"
    assert verify(sandbox, f"--junitxml={report}") == 0
    # Passing is not enough: a skipped host check did not run (skip_guard.EXPECTED_HOST_SKIPS names the allowed).
    assert skip_guard.unexpected_skips(skip_guard.cases(str(report)), skip_guard.EXPECTED_HOST_SKIPS) == []


def test_a_no_op_reads_its_facts_over_one_session(sandbox, first_converge):
    """Facts go over the host's fact shell (tasks/engine/fact_shell.py), and answer as a session per fact would:
    the same no-op, operation for operation, with the fact shell turned off."""
    over_fact_shell = converge(sandbox, args=("--debug",))
    session_each = converge(sandbox, args=("--debug",), env={"KITTY_FACT_SHELL": "0"})
    for result in (over_fact_shell, session_each):
        assert result.code == 0 and result.changed == [], result.output[-3000:]
    assert [op["name"] for op in over_fact_shell.operations] == [op["name"] for op in session_each.operations]
    assert over_fact_shell.output.count("Fact shell opened") == 1
    assert over_fact_shell.output.count("Fact shell exit status") >= 40
    # Left in sessions of their own: the health table's probe, which has a timeout.
    assert over_fact_shell.output.count("Waiting for exit status") <= 2
    assert session_each.output.count("Fact shell exit status") == 0
    assert session_each.output.count("Waiting for exit status") >= 40
