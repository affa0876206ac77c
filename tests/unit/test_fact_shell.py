"""The fact shell (templates/fact-shell.sh driven by tasks/engine/fact_shell.py), run for real under
dash, busybox sh and bash: each command must answer exactly what sshd's way of running it
(`$SHELL -c COMMAND`, a session of its own) answers, no output of one command can change
another's answer, and no nonce is ever on a command line. The SSH side is proven by every e2e
converge (tests/e2e/test_converge_sandbox.py counts its sessions)."""

from __future__ import annotations

import itertools
import os
import select
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.engine import fact_shell
from tasks.engine.fact_shell import _DRIVER, FactShell, FactShellBroken, _lines
from tests.unit.test_fact_cache import Reads, local  # noqa: F401 (a fixture)

SHELLS = [name for name in ("dash", "busybox", "bash", "zsh") if shutil.which(name)]
NONCE = "0123456789abcdef0123456789abcdef"

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


def driver_shell(login_shell: str) -> str:
    """What runs the driver: /bin/sh, as the session's command line says, where $SHELL is zsh (the
    macOS default; it runs each command); the shell under test itself otherwise."""
    return "/bin/sh" if Path(login_shell).name == "zsh" else login_shell


# A test waits this long for the driver's next bytes, then reads the session as ended: a reader
# that waits for bytes that never come (a framing bug) fails its test instead of hanging the run.
ANSWER_WAIT_S = 30


def reader(process: subprocess.Popen) -> Callable[[], bytes]:
    """`receive` for a FactShell over `process`'s stdout: what is there, b"" at its end or after ANSWER_WAIT_S."""

    def receive() -> bytes:
        ready, _, _ = select.select([process.stdout], [], [], ANSWER_WAIT_S)
        return os.read(process.stdout.fileno(), 65536) if ready else b""

    return receive


def start(
    login_shell: str, cwd: Path, nonce=None, sent: list | None = None, session_line: bool = False
) -> tuple[subprocess.Popen, FactShell]:
    """The driver as the SSH session runs it (its command line: fact_shell.driver_command), under `login_shell`.

    `nonce`: the nonces to draw (default: the real random ones); `sent`: collects what went to its stdin;
    `session_line`: the session's very command line, run as sshd runs it (`$SHELL -c LINE`), instead
    of the driver run straight by the shell under test."""
    process = subprocess.Popen(
        [login_shell, "-c", fact_shell.driver_command()]
        if session_line
        else [driver_shell(login_shell), "-c", _DRIVER, "kitty-fact-shell"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=cwd,
        env={"PATH": os.environ["PATH"], "SHELL": login_shell, "HOME": str(cwd), "TMPDIR": str(cwd)},
    )

    def send(data: bytes) -> None:
        if sent is not None:
            sent.append(data)
        process.stdin.write(data)
        process.stdin.flush()

    more = {"nonce": nonce} if nonce else {}
    return process, FactShell(send, reader(process), **more)


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
            if expected[0] < 0:  # killed by a signal: the shell's 128 + N (sshd sends the signal; failed both ways)
                expected = (128 - expected[0], *expected[1:])
            assert (status, stdout, stderr) == expected, command
    finally:
        process.stdin.close()
        assert process.wait(timeout=10) == 0  # the end of input ends the driver


def test_a_command_holding_its_nonce_is_refused(login_shell, tmp_path):
    """The nonce ends a question: a command holding it as a line would be cut in two, and its
    second half run as the next question. (A random nonce never is in a command; a test can make it so.)"""
    process, shell = start(login_shell, tmp_path, nonce=lambda: NONCE)
    try:
        with pytest.raises(FactShellBroken):
            shell.run(f"echo one\n{NONCE}\necho two")
        assert shell.run("echo still here") == (0, ["still here"], [])
    finally:
        process.stdin.close()
        process.wait(timeout=10)


def test_every_question_has_a_fresh_nonce_and_none_is_on_a_command_line(login_shell, tmp_path):
    """The old token sat on the driver's command line, readable in `ps` by every local user
    for the whole converge. Now nothing secret is there, and each question has its own nonce."""
    sent: list[bytes] = []
    process, shell = start(login_shell, tmp_path, sent=sent)
    try:
        # While a question runs: every process's command line, as `ps` shows them to anyone.
        status, stdout, _ = shell.run("sleep 0.3 & cat /proc/[0-9]*/cmdline | tr '\\000' ' '; wait")
        assert status == 0
        shell.run("true")
        nonces = [data.split(b"\n", 1)[0].decode() for data in sent]
        assert len(set(nonces)) == 2 and all(len(n) == 32 for n in nonces)
        seen = "\n".join(stdout)
        assert "kitty-fact-shell" in seen  # the driver's own command line was read
        assert not any(nonce in seen for nonce in nonces)
        assert not any(nonce in fact_shell.driver_command() for nonce in nonces)
        assert process.args == [driver_shell(login_shell), "-c", _DRIVER, "kitty-fact-shell"]
    finally:
        process.stdin.close()
        process.wait(timeout=10)


# Output that old in-band framing would have read as the end of an answer: the nonce of this
# question and the next one, fake headers, lone newlines, NUL bytes, bytes that are not UTF-8.
def _hostile(nonces: list[bytes]) -> st.SearchStrategy[bytes]:
    pieces = [b"\n", b"\0", b"\xff\xfe", b" 0 ", b" 0 0 0\n", b"\n\n"]
    for nonce in nonces:
        pieces += [nonce, b"\n" + nonce + b" ", b"\n" + nonce + b"\n", nonce + b" 0 3 0\nhi\n"]
    return st.lists(st.one_of(st.binary(max_size=40), st.sampled_from(pieces)), max_size=12).map(b"".join)


@pytest.mark.parametrize("login_shell_name", SHELLS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_command_output_changes_another_answer(login_shell_name, tmp_path, data):
    """Property: whatever a command prints on stdout and stderr (even the very nonces of this
    question and the next, which a command can never know), its own answer is that output, and
    the next command's answer is its own."""
    login_shell = shutil.which(login_shell_name)
    if login_shell_name == "busybox":
        # busybox answers as `sh` through a link (one per test: hypothesis runs every example here).
        link = tmp_path / "sh"
        if not link.exists():
            link.symlink_to(login_shell)
        login_shell = str(link)
    counter = itertools.count()
    nonces = [f"{i:032x}".replace("0", "a", 1).encode() for i in range(1, 4)]
    process, shell = start(login_shell, tmp_path, nonce=lambda: nonces[next(counter)].decode())
    try:
        out = data.draw(_hostile(nonces), label="stdout")
        err = data.draw(_hostile(nonces), label="stderr")
        (tmp_path / "out").write_bytes(out)
        (tmp_path / "err").write_bytes(err)
        status, stdout, stderr = shell.run("cat out; cat err >&2; exit 7")
        assert (status, stdout, stderr) == (7, _lines(out), _lines(err))
        assert shell.run("echo next") == (0, ["next"], [])
        assert shell.run("echo err >&2") == (0, [], ["err"])
    finally:
        process.stdin.close()
        process.wait(timeout=10)


def test_a_process_left_behind_never_writes_into_a_later_answer(login_shell, tmp_path):
    process, shell = start(login_shell, tmp_path)
    try:
        assert shell.run("(sleep 0.3; echo late; echo late >&2) & echo now") == (0, ["now"], [])
        time.sleep(0.6)
        assert shell.run("echo mine") == (0, ["mine"], [])
    finally:
        process.stdin.close()
        process.wait(timeout=10)


def test_an_answer_out_of_protocol_breaks_the_shell():
    """A header that is not for this question (another nonce, no counts) is never read as an answer."""
    for answer in (b"ffffffffffffffffffffffffffffffff 0 0 0\n", b"garbage\n", b"x" * 300):
        shell = FactShell(lambda data: None, iter([answer, b""]).__next__, nonce=lambda: NONCE)
        with pytest.raises(FactShellBroken):
            shell.run("true")
        assert shell.broken


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


def test_a_session_that_dies_mid_answer_sends_the_fact_to_a_session_of_its_own(local, tmp_path, monkeypatch):  # noqa: F811
    """One broken fact shell must not fail the converge: the fact is read again the way pyinfra
    reads it (here the local connector, over SSH a session of its own), and so is every later one."""
    _, host, path = local
    process, shell = start(shutil.which("dash"), tmp_path)
    received = []

    def cut_short() -> bytes:
        # The header and part of the answer, then the session ends.
        if received:
            return b""
        chunk = reader(process)()
        received.append(chunk)
        return chunk[: chunk.index(b"\n") + 1]

    shell._receive = cut_short
    monkeypatch.setattr(fact_shell, "shell_for", lambda host: None if shell.broken else shell)
    try:
        # Asked over the fact shell (its driver ran it: 1), cut short, asked again in a session: 2.
        assert host.get_fact(Reads, path=path)["reads"] == 2
        assert received and shell.broken
        # The next fact goes straight to a session: the fact shell is not asked again.
        assert host.get_fact(Reads, path=path + "-other")["reads"] == 1
        assert len(received) == 1
    finally:
        process.stdin.close()
        process.wait(timeout=10)


def test_the_sessions_command_line_starts_the_driver_under_every_login_shell(login_shell, tmp_path):
    """What the SSH session runs (fact_shell.driver_command), run as sshd runs it: `$SHELL -c LINE`.
    Under zsh (macOS's login shell) it is /bin/sh that runs the driver, as on the Mac."""
    process, shell = start(login_shell, tmp_path, session_line=True)
    try:
        assert shell.run("echo out; echo err >&2; exit 4") == (4, ["out"], ["err"])
        assert shell.broken is False
    finally:
        process.stdin.close()
        assert process.wait(timeout=10) == 0


CHUNKED_COMMANDS = ["printf 'a\\nb'; echo err >&2; exit 3", "true", "printf '\\n\\nx\\n'", "echo last"]
CHUNKED_NONCES = [f"{i:032x}".replace("0", "b", 1) for i in range(1, len(CHUNKED_COMMANDS) + 1)]


@pytest.fixture(scope="module")
def transcript(tmp_path_factory) -> tuple[bytes, list]:
    """Every byte the driver (dash) answered to CHUNKED_COMMANDS, and the answers read live."""
    cwd = tmp_path_factory.mktemp("transcript")
    drawn = iter(CHUNKED_NONCES)
    process, shell = start(shutil.which("dash") or "/bin/sh", cwd, nonce=lambda: next(drawn))
    received, stream = shell._receive, []

    def recording() -> bytes:
        stream.append(received())
        return stream[-1]

    shell._receive = recording
    try:
        answers = [shell.run(command) for command in CHUNKED_COMMANDS]
    finally:
        process.stdin.close()
        process.wait(timeout=10)
    return b"".join(stream), answers


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=20))
def test_an_answer_reads_the_same_however_the_bytes_arrive(transcript, cuts):
    """Over a pipe the header and the output arrive in separate reads; over SSH one `recv` often
    holds a header and the output after it, or the end of one answer and the start of the next.
    Property: the same bytes, cut anywhere, are the same answers."""
    stream, answers = transcript
    points = sorted({0, *(cut % (len(stream) + 1) for cut in cuts), len(stream)})
    chunks = iter([stream[a:b] for a, b in itertools.pairwise(points) if b > a] + [b""])
    drawn = iter(CHUNKED_NONCES)
    shell = FactShell(lambda data: None, chunks.__next__, nonce=lambda: next(drawn))
    assert [shell.run(command) for command in CHUNKED_COMMANDS] == answers
    assert [*chunks] == [b""]  # every byte read, and none asked for beyond the last answer


def test_an_answer_announced_too_large_is_refused_before_any_of_it_is_read():
    """A header is the driver's word on how much to read: one beyond any fact's output (MAX_ANSWER
    in all, however split between stdout and stderr) is out of protocol, not a reason to read a GB."""
    limit = FactShell.MAX_ANSWER
    for out, err, refused in [(limit, 1, True), (limit // 2 + 1, limit // 2 + 1, True), (limit - 1, 1, False)]:
        asked = []

        def receive(out=out, err=err, asked=asked) -> bytes:
            asked.append(1)
            return f"{NONCE} 0 {out} {err}\n".encode() if len(asked) == 1 else b""

        shell = FactShell(lambda data: None, receive, nonce=lambda: NONCE)
        with pytest.raises(FactShellBroken):
            shell.run("true")
        # Refused at the header: asked once. Accepted: asked for the output (the session then ended).
        assert len(asked) == (1 if refused else 2), (out, err)


def test_closing_the_shell_ends_its_session_and_it_is_not_asked_again():
    closed = []
    shell = FactShell(lambda data: None, lambda: b"", close=lambda: closed.append(True), nonce=lambda: NONCE)
    assert shell.broken is False
    shell.close()
    assert closed == [True] and shell.broken
    with pytest.raises(FactShellBroken):
        shell.run("true")
