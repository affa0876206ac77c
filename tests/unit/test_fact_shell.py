"""The fact shell (templates/fact-shell.sh driven by tasks/fact_shell.py), run for real under
dash, busybox sh and bash: each command must answer exactly what sshd's way of running it
(`$SHELL -c COMMAND`, a session of its own) answers. The SSH side is proven by every e2e
converge (tests/e2e/test_converge_sandbox.py counts its sessions)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tasks.fact_shell import _DRIVER, FactShell, FactShellBroken, _lines

SHELLS = [name for name in ("dash", "busybox", "bash") if shutil.which(name)]
TOKEN = "0123456789abcdef0123456789abcdef"

COMMANDS = [
    "echo a; echo b",
    "printf 'no newline at the end'",
    "true",
    "printf 'a\\n\\n\\n'",
    "echo out; echo err >&2; echo more err >&2; exit 3",
    # Reads stdin: gets end of input, not the next question.
    "cat; echo after cat",
    'read -r line; echo "read: ${line:-nothing}"',
    'sh -c \'echo "quoted $0 \\"x y\\""\' arg0',
    "cat <<'EOF'\nline one\n  indented $HOME\nEOF\necho done",
    "exit 255",
    "kill -9 $$",
    "printf 'caf\\303\\251 \\342\\234\\223\\n'",
    # Large output on both streams at once: neither may block the other.
    'i=0; while [ $i -lt 2000 ]; do echo "out $i xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"; '
    'echo "err $i yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy" >&2; i=$((i + 1)); done',
    # A previous command's variables and directory do not leak into the next.
    "cd /; leaked=1; echo set",
    'pwd; echo "${leaked:-fresh}"',
]


@pytest.fixture(params=SHELLS)
def login_shell(request, tmp_path) -> str:
    """A path to the shell under test: what $SHELL names (busybox answers as `sh` through a link)."""
    if request.param == "busybox":
        link = tmp_path / "sh"
        link.symlink_to(shutil.which("busybox"))
        return str(link)
    return shutil.which(request.param)


def start(login_shell: str, cwd: Path) -> tuple[subprocess.Popen, FactShell]:
    process = subprocess.Popen(
        [login_shell, "-c", _DRIVER, "kitty-fact-shell", TOKEN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=cwd,
        env={"PATH": os.environ["PATH"], "SHELL": login_shell, "HOME": str(cwd)},
    )

    def send(data: bytes) -> None:
        process.stdin.write(data)
        process.stdin.flush()

    return process, FactShell(send, lambda: process.stdout.read1(65536), TOKEN)


def as_sshd_runs_it(login_shell: str, command: str, cwd: Path) -> tuple[int, list[str], list[str]]:
    done = subprocess.run(
        [login_shell, "-c", command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        cwd=cwd,
        env={"PATH": os.environ["PATH"], "SHELL": login_shell, "HOME": str(cwd)},
    )
    return done.returncode, _lines(done.stdout), _lines(done.stderr)


def test_each_command_answers_as_its_own_session_would(login_shell, tmp_path):
    process, shell = start(login_shell, tmp_path)
    try:
        for command in COMMANDS:
            expected = as_sshd_runs_it(login_shell, command, tmp_path)
            status, stdout, stderr = shell.run(command)
            # stderr is sent once the command has ended, after stdout; its trailing empty lines
            # (dropped by the shell's command substitution) are the only difference allowed.
            while expected[2] and expected[2][-1] == "":
                expected[2].pop()
            if expected[0] < 0:  # killed by a signal: the shell's 128 + N (sshd sends the signal; failed both ways)
                expected = (128 - expected[0], *expected[1:])
            assert (status, stdout, stderr) == expected, command
    finally:
        process.stdin.close()
        assert process.wait(timeout=10) == 0  # the end of input ends the driver


def test_a_command_holding_the_token_is_refused(login_shell, tmp_path):
    process, shell = start(login_shell, tmp_path)
    try:
        with pytest.raises(FactShellBroken):
            shell.run(f"echo {TOKEN}")
        assert shell.run("echo still here") == (0, ["still here"], [])
    finally:
        process.stdin.close()
        process.wait(timeout=10)


def test_a_driver_that_died_breaks_the_shell(login_shell, tmp_path):
    process, shell = start(login_shell, tmp_path)
    process.kill()
    process.wait(timeout=10)
    with pytest.raises(FactShellBroken):
        shell.run("echo anyone")
    assert shell.broken
    with pytest.raises(FactShellBroken):
        shell.run("echo anyone")


def test_a_question_left_half_answered_breaks_the_shell(login_shell, tmp_path):
    """An interrupted reader (a greenlet killed mid-answer) must not hand the rest of an answer to the next question."""
    process, shell = start(login_shell, tmp_path)
    receive = shell._receive

    def interrupted():
        raise KeyboardInterrupt

    try:
        shell._receive = interrupted
        with pytest.raises(KeyboardInterrupt):
            shell.run("echo first")
        shell._receive = receive
        assert shell.broken
        with pytest.raises(FactShellBroken):
            shell.run("echo second")
    finally:
        process.stdin.close()
        process.wait(timeout=10)


@pytest.mark.parametrize(
    ("data", "lines"),
    [(b"", []), (b"a", ["a"]), (b"a\n", ["a"]), (b"a\n\n", ["a", ""]), (b"\n", [""]), (b"a\nb", ["a", "b"])],
)
def test_lines_split_as_pyinfra_reads_a_session(data, lines):
    assert _lines(data) == lines
