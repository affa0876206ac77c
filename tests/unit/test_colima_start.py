"""templates/colima-start.sh under dash, busybox sh and bash: colima after a power cut (issue 25, defect 5).

Stale Lima host agent files (ha.pid naming a dead process, ha.sock) make every
`colima start` fail; the wrapper launchd runs removes them, and only them, then
becomes colima.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_host_scripts import SHELLS, TEMPLATES, needs_shells, run, userland  # noqa: F401 - fixture

SCRIPT = str(TEMPLATES / "colima-start.sh")


def lima_dir(tmp_path: Path, pid: int | None, sock: bool = True) -> Path:
    folder = tmp_path / "_lima" / "colima"
    folder.mkdir(parents=True)
    if pid is not None:
        (folder / "ha.pid").write_text(f"{pid}\n")
    if sock:
        (folder / "ha.sock").write_text("")
    return folder


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_stale_files_of_a_dead_host_agent_are_removed_then_colima_runs(shell, userland, tmp_path):  # noqa: F811
    pid = dead_pid()
    folder = lima_dir(tmp_path, pid)
    p = run(shell, userland, [SCRIPT, str(folder), "echo", "colima", "start", "--foreground"])
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "colima start --foreground"
    assert not (folder / "ha.pid").exists() and not (folder / "ha.sock").exists()
    assert f"(PID {pid} is not Lima's running host agent)" in p.stderr


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_a_socket_without_its_pid_file_is_removed(shell, userland, tmp_path):  # noqa: F811
    folder = lima_dir(tmp_path, None)
    p = run(shell, userland, [SCRIPT, str(folder), "true"])
    assert p.returncode == 0 and not (folder / "ha.sock").exists()


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_a_running_host_agent_is_left_alone(shell, userland, tmp_path):  # noqa: F811
    agent = tmp_path / "limactl"
    shutil.copy(shutil.which("sleep"), agent)
    proc = subprocess.Popen([str(agent), "30"])
    try:
        folder = lima_dir(tmp_path, proc.pid)
        p = run(shell, userland, [SCRIPT, str(folder), "true"])
        assert p.returncode == 0
        assert (folder / "ha.pid").exists() and (folder / "ha.sock").exists()
    finally:
        proc.kill()
        proc.wait()


@needs_shells
@pytest.mark.parametrize("shell", ["dash", "bash"])
def test_a_pid_reused_by_another_program_is_stale(shell, userland, tmp_path):  # noqa: F811
    """procps/BSD ps name the process; busybox's ps cannot (-p), and the wrapper then keeps the files."""
    proc = subprocess.Popen(["sleep", "30"])
    try:
        folder = lima_dir(tmp_path, proc.pid)
        p = run(shell, userland, [SCRIPT, str(folder), "true"])
        assert p.returncode == 0
        assert not (folder / "ha.pid").exists()
    finally:
        proc.kill()
        proc.wait()


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_without_arguments_it_refuses(shell, userland):  # noqa: F811
    assert run(shell, userland, [SCRIPT]).returncode == 64
