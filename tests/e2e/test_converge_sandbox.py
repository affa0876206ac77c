"""Converge a fresh sandbox host over SSH: the second converge changes nothing; the host suite passes."""

import pytest

from sandbox.converge import verify
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


def test_host_suite_passes_over_ssh(sandbox, first_converge):
    assert verify(sandbox) == 0
