"""Verification on the sandbox host: the host suite and the health table, green and with one server broken.

A stopped server must fail exactly its own checks, each naming it; a hung one
(SIGSTOP: systemd still calls it running, so the converge does not restart it)
must show in the health table and fail the converge, naming its log. Each test
puts the sandbox back as it found it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

from sandbox.converge import GROUP_DATA, sandbox_env
from tests import skip_guard
from tests.e2e.conftest import ROOT, converge, sandbox_config, ssh

pytestmark = pytest.mark.e2e

BROKEN = "summary"
HEALTH_TABLE = "Verification | Health table"
SERVER_TESTS = (
    "test_model_server_listens_on_its_port",
    "test_model_server_health_is_ok",
    "test_model_server_lists_its_alias",
    "test_model_server_answers_a_chat_completion",
    "test_model_server_job_runs_without_crash_loop",
    "test_model_server_metrics_carry_the_model_series",
)


def host_suite(name: str, tmp_path) -> dict[str, tuple[str, str]]:
    """Run tests/host against the sandbox over SSH; {test id: (outcome, message)} from its JUnit XML."""
    env = sandbox_env(name)
    user_host = env["KITTY_HOSTS"].split(",")[0]
    report = tmp_path / "host.xml"
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "host"),
        f"--hosts=paramiko://{user_host}", f"--ssh-identity-file={env['KITTY_SSH_KEY']}", f"--junitxml={report}",
    ]  # fmt: skip
    run = subprocess.run(
        command, cwd=ROOT, env={**os.environ, "KITTY_GROUP_DATA": str(GROUP_DATA)}, capture_output=True, text=True
    )
    assert report.exists(), f"the host suite did not run: {run.stdout[-2000:]}{run.stderr[-2000:]}"
    # A skipped host check is a check that did not run: it fails unless named (skip_guard.EXPECTED_HOST_SKIPS).
    assert skip_guard.unexpected_skips(skip_guard.cases(str(report)), skip_guard.EXPECTED_HOST_SKIPS) == []
    outcomes = {}
    for case in ElementTree.parse(report).iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        if problem is not None:
            outcomes[case.get("name")] = ("failed", problem.get("message") or "")
        elif skipped is not None:
            outcomes[case.get("name")] = ("skipped", skipped.get("message") or "")
        else:
            outcomes[case.get("name")] = ("passed", "")
    return outcomes


def failed(outcomes: dict) -> dict[str, str]:
    return {test: message for test, (outcome, message) in outcomes.items() if outcome == "failed"}


def unit(server: str) -> str:
    return f"kitty-llama-{server}.service"


def test_every_converge_ends_with_a_health_table_that_changes_nothing(first_converge):
    cfg = sandbox_config()
    assert HEALTH_TABLE not in first_converge.changed and HEALTH_TABLE not in first_converge.failed
    assert any(op["name"] == HEALTH_TABLE for op in first_converge.operations)
    assert "service" in first_converge.output and "latency" in first_converge.output
    for name, server in cfg.enabled_servers().items():
        # The health table's row (the restart table before it names the server too, without a port).
        lines = first_converge.output.splitlines()
        row = next(line for line in lines if f"server {name} " in line and str(server.port) in line)
        assert str(server.port) in row and "healthy" in row


def test_the_host_suite_is_green_and_names_each_server(sandbox, first_converge, tmp_path):
    outcomes = host_suite(sandbox, tmp_path)
    assert failed(outcomes) == {}
    for name in sandbox_config().enabled_servers():
        for test in SERVER_TESTS:
            assert outcomes[f"{test}[{name}-paramiko://127.0.0.1]"][0] == "passed"


def test_a_stopped_server_fails_exactly_its_own_checks(sandbox, first_converge, tmp_path):
    ssh(sandbox, f"sudo systemctl stop {unit(BROKEN)}")
    try:
        failures = failed(host_suite(sandbox, tmp_path))
    finally:
        # The converge starts a unit that is not running, and waits for its /health.
        back = converge(sandbox)
    assert set(failures) == {f"{test}[{BROKEN}-paramiko://127.0.0.1]" for test in SERVER_TESTS}
    assert all(f"model server {BROKEN}:" in message for message in failures.values())
    assert (
        f"{unit(BROKEN)} is inactive/dead"
        in failures[f"test_model_server_job_runs_without_crash_loop[{BROKEN}-paramiko://127.0.0.1]"]
    )
    assert back.code == 0, back.output[-3000:]
    assert f"Model servers | server {BROKEN}: start (not running)" in back.changed


def test_a_hung_server_shows_in_the_health_table_and_fails_the_converge(sandbox, first_converge):
    cfg = sandbox_config()
    pid = ssh(sandbox, f"systemctl show -p MainPID --value {unit(BROKEN)}").stdout.strip()
    assert pid.isdigit() and pid != "0", f"{unit(BROKEN)} has no main process"
    ssh(sandbox, f"sudo kill -STOP {pid}")
    try:
        hung = converge(sandbox)
    finally:
        ssh(sandbox, f"sudo kill -CONT {pid}")
    assert hung.code != 0
    lines = hung.output.splitlines()
    port = str(cfg.servers[BROKEN].port)
    row = next(line for line in lines if f"server {BROKEN} " in line and port in line and "latency" not in line)
    assert str(cfg.servers[BROKEN].port) in row and "no answer in" in row
    assert any("server q4 " in line and "healthy" in line for line in lines)
    assert f"server {BROKEN} (port {cfg.servers[BROKEN].port}, no answer in" in hung.output
    assert f"{cfg.paths.logs_dir}/llamacpp-{BROKEN}.log" in hung.output
    # Resumed, it answers again: the next converge is green and changes nothing.
    again = converge(sandbox)
    assert again.code == 0 and again.changed == [], again.output[-3000:]
