"""Converge a fresh sandbox host twice over SSH: the second converge changes nothing."""

import pytest

from sandbox.converge import converge, verify

pytestmark = pytest.mark.e2e


def changed_ops(results: dict) -> list[str]:
    return [op["name"] for op in results["results"]["operations"] if op["success"]]


def failed_ops(results: dict) -> list[str]:
    return [op["name"] for op in results["results"]["operations"] if op["error"]]


@pytest.fixture(scope="module")
def first_converge(sandbox, tmp_path_factory):
    code, results = converge(sandbox, "--json", log=tmp_path_factory.mktemp("converge") / "first.json")
    assert code == 0 and not failed_ops(results), f"first converge failed: {failed_ops(results)}"
    return results


def test_first_converge_installs_the_prerequisites(first_converge):
    assert "Prerequisites | Install apt packages" in changed_ops(first_converge)


def test_second_converge_changes_nothing(sandbox, first_converge):
    code, results = converge(sandbox, "--json")
    assert code == 0
    assert changed_ops(results) == []
    assert results["results"]["totals"]["success"] == 0 and results["results"]["totals"]["error"] == 0


def test_host_suite_passes_over_ssh(sandbox, first_converge):
    assert verify(sandbox) == 0
