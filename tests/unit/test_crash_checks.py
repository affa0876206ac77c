"""The supervisors' crash checks (wait-healthy.sh's CHECK), executed for real under dash, busybox sh and bash.

`systemctl show` and `launchctl print` are stand-ins that answer as the real
tools do (launchctl's format as sandbox/macsim's launchctl prints it); the
check's own shell code, sed and case, runs for real on each shell's userland.
"""

from __future__ import annotations

import pytest

from tasks.supervise import launchd, systemd
from tasks.supervise.program import Program
from tests.unit.test_host_scripts import SHELLS, WAIT, needs_shells, run, userland  # noqa: F401 - fixture

PROGRAM = Program(
    name="server summary",
    label="com.kitty.llama-server.summary",
    unit="kitty-llama-summary.service",
    description="",
    argv=["/opt/kitty/llama.cpp/current/bin/llama-server"],
    log="/dev/null",
    working_directory="/",
)


def stand_in(tmp_path, name: str, output: str, code: int = 0) -> dict:
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    (folder / "answer").write_text(output)
    tool = folder / name
    tool.write_text(f'#!/bin/sh\ncat "{folder}/answer"\nexit {code}\n')
    tool.chmod(0o755)
    return {"folder": folder}


def check(shell, userland, tmp_path, command: str):  # noqa: F811 - the fixture, passed on
    path = userland["busybox"] if shell == "busybox" else f"{userland['shims']}:/usr/local/bin:/usr/bin:/bin"
    return run(shell, userland, ["-c", command], env={"PATH": f"{tmp_path / 'bin'}:{path}"})


SYSTEMD = "ActiveState={}\nSubState={}\nExecMainStatus={}\nNRestarts=0\n"


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("active", "sub", "status", "dead"),
    [
        ("active", "running", "0", False),
        ("activating", "auto-restart", "1", True),
        ("failed", "failed", "1", True),
        ("inactive", "dead", "0", True),
    ],
)
def test_systemd_check(shell, userland, tmp_path, active, sub, status, dead):  # noqa: F811
    stand_in(tmp_path, "systemctl", SYSTEMD.format(active, sub, status))
    result = check(shell, userland, tmp_path, systemd.crash_check(PROGRAM))
    assert (result.returncode != 0) == dead, result.stdout + result.stderr
    if dead:
        assert result.stdout.startswith("systemd: ") and f"ExecMainStatus={status}" in result.stdout


def launchctl_print(state: str, last: str) -> str:
    return (
        f"system/{PROGRAM.label} = {{\n\tactive count = 0\n\tpath = /Library/LaunchDaemons/x.plist\n"
        f"\tstate = {state}\n\n\tprogram = /x\n\targuments = {{\n\t\t/x\n\t}}\n\n"
        "\tdomain = system\n\truns = 2\n"
        f"\t{last}\n\n\tproperties = keepalive | runatload\n}}\n"
    )


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("state", "last", "dead"),
    [
        ("running", "last exit code = 1", False),
        ("not running", "last exit code = (never exited)", False),
        ("not running", "last terminating signal = Terminated: 15", False),
        ("not running", "last exit code = 1", True),
        ("not running", "last exit code = 78: EX_CONFIG", True),
        ("not running", "last terminating signal = Segmentation fault: 11", True),
    ],
)
def test_launchd_check(shell, userland, tmp_path, state, last, dead):  # noqa: F811
    stand_in(tmp_path, "launchctl", launchctl_print(state, last))
    result = check(shell, userland, tmp_path, launchd.crash_check(PROGRAM))
    assert (result.returncode != 0) == dead, result.stdout + result.stderr
    if dead:
        assert result.stdout.startswith("launchd: state = not running, ") and "runs = 2" in result.stdout


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_launchd_check_of_a_job_that_is_not_loaded(shell, userland, tmp_path):  # noqa: F811
    stand_in(tmp_path, "launchctl", "Could not find service in domain for port\n", code=113)
    result = check(shell, userland, tmp_path, launchd.crash_check(PROGRAM))
    assert result.returncode != 0 and "is not loaded" in result.stdout


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_the_wait_reports_what_the_check_printed(shell, userland, tmp_path):  # noqa: F811
    log = tmp_path / "server.log"
    log.write_text("error while handling argument: Unsupported cache type: bogus\n")
    spec = f"server summary|http://127.0.0.1:1/health|120|{log}|llama|echo systemd: ExecMainStatus=1; exit 1"
    result = run(shell, userland, [str(WAIT), spec])
    assert result.returncode == 1
    assert "[health] server summary: FAILED, exited while starting (systemd: ExecMainStatus=1)." in result.stdout
    assert "Unsupported cache type: bogus" in result.stdout
