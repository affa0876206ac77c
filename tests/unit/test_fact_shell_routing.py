"""Which commands go over the fact shell, and what pyinfra gets back from it
(tasks/engine/fact_shell.py: `run_fact_command`, `shell_for`).

A fact's command over the fact shell must answer what pyinfra's own connector answers for the
same command and arguments: the same success, the same stdout and stderr lines. Here the
connector is pyinfra's real @local one and the fact shell is the real driver under dash; over SSH
(`_open_over_ssh`) every e2e converge proves it (tests/e2e/test_converge_sandbox.py)."""

from __future__ import annotations

import functools
import shutil
import threading

import click
import pytest
from paramiko import SSHClient
from pyinfra.api import Config, Inventory, State, output
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_state

from tasks.engine import fact_shell
from tests.unit.test_fact_cache import local  # noqa: F401 (a fixture)
from tests.unit.test_fact_shell import start


@pytest.fixture
def over_fact_shell(local, tmp_path, monkeypatch):  # noqa: F811
    """The @local host, with a real fact shell (the driver under dash) as its fact shell; the
    questions sent to it are counted."""
    _, host, _ = local
    sent: list[bytes] = []
    process, shell = start(shutil.which("dash") or "/bin/sh", tmp_path, sent=sent)
    monkeypatch.setattr(fact_shell, "shell_for", lambda host: None if shell.broken else shell)
    try:
        yield host, shell, sent
    finally:
        process.stdin.close()
        process.wait(timeout=10)


def _streams(result) -> tuple[bool, list[str], list[str]]:
    success, output_ = result
    return success, output_.stdout_lines, output_.stderr_lines


@pytest.mark.parametrize(
    ("command", "arguments"),
    [
        ("echo a; echo b; echo err >&2", {}),
        ("echo out; echo err >&2; exit 3", {}),
        ("echo out; exit 3", {"_success_exit_codes": [0, 3]}),
        ("exit 0", {"_success_exit_codes": [3]}),
        ('echo "$KITTY_ROUTED"; pwd', {"_env": {"KITTY_ROUTED": "from _env"}, "_chdir": "/"}),
        ("echo $0", {"_shell_executable": "dash"}),
    ],
)
def test_a_fact_command_answers_as_the_connector_would(over_fact_shell, command, arguments):
    host, _, sent = over_fact_shell
    expected = _streams(host.connector.run_shell_command(command, **arguments))
    answered = fact_shell.run_fact_command(host, command, **arguments)
    assert answered is not None and len(sent) == 1  # it went over the fact shell, once
    assert _streams(answered) == expected


@pytest.mark.parametrize("argument", [{"_stdin": "input"}, {"_get_pty": True}, {"_timeout": 5}])
def test_a_command_with_stdin_a_pty_or_a_timeout_is_left_to_a_session(over_fact_shell, argument):
    """The driver gives every command /dev/null for stdin, no terminal, and no clock of its own."""
    host, _, sent = over_fact_shell
    assert fact_shell.run_fact_command(host, "true", **argument) is None
    assert sent == []


def test_a_fact_shell_busy_with_another_question_is_not_waited_for(over_fact_shell):
    """Two greenlets reading facts at once: the second goes to a session, it does not queue."""
    host, shell, sent = over_fact_shell
    with shell.lock:
        answered = []
        asking = threading.Thread(target=lambda: answered.append(fact_shell.run_fact_command(host, "true")))
        asking.start()
        asking.join(timeout=10)
        assert not asking.is_alive() and answered == [None]
    assert sent == []
    assert fact_shell.run_fact_command(host, "true") is not None  # free again: over the fact shell


@pytest.fixture
def printed(capsys):
    """pyinfra's output as its CLI sets it up on a terminal (click, in colour), restored after."""
    echo, format_text = output._echo, output._format_text
    output.set_echo(functools.partial(click.echo, color=True))
    output.set_formatter(click.style)
    try:
        yield capsys
    finally:
        output.set_echo(echo)
        output.set_formatter(format_text)


def test_output_is_printed_only_when_asked_and_only_on_stderr(over_fact_shell, printed):
    host, _, _ = over_fact_shell
    fact_shell.run_fact_command(host, "echo quiet; echo quiet >&2")
    assert printed.readouterr() == ("", "")
    fact_shell.run_fact_command(host, "echo loud; echo louder >&2", print_output=True, print_input=True)
    shown = printed.readouterr()
    assert shown.out == ""
    lines = shown.err.splitlines()
    assert lines[0].startswith(f"{host.print_prefix}>>> ") and "echo loud" in lines[0]
    # stderr's lines in red, as pyinfra's own connectors print them.
    assert lines[1:] == [f"{host.print_prefix}loud", f"{host.print_prefix}{click.style('louder', 'red')}"]


@pytest.fixture
def ssh_host(tmp_path):
    """A host pyinfra would reach over SSH, not connected (nothing listens for it)."""
    inventory = Inventory((["127.0.0.1"], {}))
    state = State(check_for_changes=True)
    state.init(inventory, Config())
    with ctx_state.use(state):
        state.set_stage(StateStage.Prepare)
        yield inventory.get_host("127.0.0.1")


def test_only_a_host_over_ssh_has_a_fact_shell(local, ssh_host):  # noqa: F811
    """@local starts a process per command already: no fact shell. A host over SSH with no
    session to open one in has none either, and that answer is kept."""
    _, local_host, _ = local
    assert fact_shell.shell_for(local_host) is None
    assert fact_shell.shell_for(ssh_host) is None
    assert ssh_host.__dict__[fact_shell._ATTR] == (None, None)


def test_the_fact_shell_of_a_connection_is_kept_until_it_breaks_or_the_host_reconnects(ssh_host, tmp_path, monkeypatch):
    process, shell = start(shutil.which("dash") or "/bin/sh", tmp_path)
    try:
        # Opened for this connection (its client): the same shell for every later fact.
        ssh_host.__dict__[fact_shell._ATTR] = (ssh_host.connector.client, shell)
        assert fact_shell.shell_for(ssh_host) is shell
        assert fact_shell.shell_for(ssh_host) is shell
        # KITTY_FACT_SHELL=0: a session per fact, as plain pyinfra.
        monkeypatch.setenv("KITTY_FACT_SHELL", "0")
        assert fact_shell.shell_for(ssh_host) is None
        monkeypatch.setenv("KITTY_FACT_SHELL", "1")
        assert fact_shell.shell_for(ssh_host) is shell
        # Reconnected (a new client, no session yet): the old shell went with the old connection.
        ssh_host.connector.client = SSHClient()
        assert fact_shell.shell_for(ssh_host) is None
        assert ssh_host.__dict__[fact_shell._ATTR] == (ssh_host.connector.client, None)
        # Broken: never asked again on that connection.
        ssh_host.__dict__[fact_shell._ATTR] = (ssh_host.connector.client, shell)
        shell.close()
        assert fact_shell.shell_for(ssh_host) is None
    finally:
        process.stdin.close()
        process.wait(timeout=10)


def test_a_session_that_cannot_be_opened_leaves_the_host_to_sessions_per_command(ssh_host, monkeypatch):
    """Any failure to open it (a refused channel, a dead transport): no fact shell, the run goes on."""

    class Refusing(SSHClient):
        def get_transport(self):
            raise OSError("channel refused")

    ssh_host.connector.client = Refusing()
    assert fact_shell.shell_for(ssh_host) is None
    assert ssh_host.__dict__[fact_shell._ATTR] == (ssh_host.connector.client, None)


def test_a_sudo_password_prompt_over_the_fact_shell_asks_the_operator_and_asks_the_host_again(
    over_fact_shell, monkeypatch
):
    """sudo on a Mac asks for a password. pyinfra's connectors see its line on stderr, ask the
    operator once, keep the answer on the host, and run the command again: so must the fact shell."""
    from pyinfra.connectors import util

    host, _, sent = over_fact_shell
    asked = []
    monkeypatch.setattr(util, "getpass", lambda prompt: asked.append(prompt) or "typed")
    success, _ = fact_shell.run_fact_command(host, "echo 'sudo: a password is required' >&2; exit 1")
    assert not success
    assert asked == [f"{host.print_prefix}sudo password: "]
    assert host.connector_data["prompted_sudo_password"] == "typed"
    assert len(sent) == 2  # asked again, over the fact shell
