"""One SSH session for all of a converge's fact reads.

pyinfra opens an SSH session per command. On the sandbox host a session costs about
48 ms before the command even starts (sshd forks and sets up a session; sudo adds 7),
and a no-op converge is nothing but fact reads: ~60 of them, 3 of its 5 seconds. Here
a host reached over SSH gets one long-lived session running `templates/fact-shell.sh`,
and every fact's command goes to it: the very command pyinfra would have run (built by
pyinfra from the same arguments: sudo, user, env, shell), run by the account's login
shell as sshd runs one, stdin /dev/null. A command there costs 1-2 ms plus its own work.

Only fact reads go there (tasks/engine/fact_cache.py sends them: a fact's command leaves the host as
it was). Operations' commands, uploads, anything with stdin, a pty or a timeout open
their own session, as pyinfra does. The local connector (a deploy run on the Mac itself)
starts a process per command, cheap already: it is left as it is. When the fact shell
cannot start or breaks, its host's facts go back to a session each, and the run goes on.
KITTY_FACT_SHELL=0 turns it off (a session per fact, as plain pyinfra; the benchmark
compares both).
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import threading
from collections.abc import Callable

from pyinfra import logger

from tasks.engine import templates

_DRIVER = templates.path("fact-shell.sh").read_text()
_ATTR = "_kitty_fact_shell"


class FactShellBroken(Exception):
    """The session ended or answered out of protocol: its host goes back to a session per command."""


class FactShell:
    """The controller's side of templates/fact-shell.sh, over any byte stream:
    `send(bytes)` writes to the driver's stdin, `receive()` returns what its stdout
    has next (b"" at its end), `close()` ends the session.

    Each question ends with a nonce drawn for it alone (`nonce()`, 128 random bits), sent
    on stdin: never on a command line, where every local user could read it in `ps`.
    Each answer is a header line (the nonce, the exit status and the byte counts of
    stdout and stderr), then exactly that many bytes: what a command prints is counted,
    never searched for a marker, so no output can end its answer early or forge the next.

    A question that was not answered in full (the session failed, or the caller was
    interrupted half-way) leaves the shell `broken` for good: its next answer could be
    the rest of the last one."""

    # An answer longer than this is out of protocol (a fact's output is a few MB at most).
    MAX_ANSWER = 1 << 30

    def __init__(
        self,
        send: Callable[[bytes], None],
        receive: Callable[[], bytes],
        close: Callable[[], None] = lambda: None,
        nonce: Callable[[], str] = lambda: secrets.token_hex(16),
    ):
        self._send = send
        self._receive = receive
        self._close = close
        self._nonce = nonce
        self._pending = b""
        self.broken = False
        # One question at a time: two greenlets asking at once would read each other's answers.
        self.lock = threading.Lock()

    def _more(self) -> None:
        chunk = self._receive()
        if not chunk:
            raise FactShellBroken("the fact shell's session ended")
        self._pending += chunk

    def _line(self) -> bytes:
        while (end := self._pending.find(b"\n")) < 0:
            if len(self._pending) > 256:
                raise FactShellBroken("the fact shell answered a header longer than any it sends")
            self._more()
        found, self._pending = self._pending[:end], self._pending[end + 1 :]
        return found

    def _exactly(self, size: int) -> bytes:
        while len(self._pending) < size:
            self._more()
        found, self._pending = self._pending[:size], self._pending[size:]
        return found

    def run(self, command: str) -> tuple[int, list[str], list[str]]:
        """Run `command` (a shell command line); its exit status, stdout lines and stderr lines,
        split as pyinfra splits a session's output. Raises FactShellBroken when it cannot."""
        if self.broken:
            raise FactShellBroken("the fact shell broke earlier")
        data = command.encode()
        nonce = self._nonce().encode()
        if not re.fullmatch(rb"[0-9a-f]{32,}", nonce) or nonce in data:
            raise FactShellBroken("no nonce for this question (a command holding it, or a weak one)")
        self.broken = True
        try:
            self._send(nonce + b"\n" + data + b"\n" + nonce + b"\n")
            header = self._line().split()
            if len(header) != 4 or header[0] != nonce or not all(part.isdigit() for part in header[1:]):
                raise FactShellBroken(f"the fact shell answered {b' '.join(header)[:80]!r} for a header")
            status, out, err = (int(part) for part in header[1:])
            if out + err > self.MAX_ANSWER:
                raise FactShellBroken(f"the fact shell announced an answer of {out + err} bytes")
            stdout = self._exactly(out)
            stderr = self._exactly(err)
        except FactShellBroken:
            raise
        except Exception as error:  # the session's own errors (socket closed, broken pipe, ...)
            raise FactShellBroken(f"the fact shell's session failed: {type(error).__name__}") from error
        self.broken = False
        return status, _lines(stdout), _lines(stderr)

    def close(self) -> None:
        self.broken = True
        try:
            self._close()
        except Exception:  # noqa: BLE001 -- closing what already failed
            pass


def _lines(data: bytes) -> list[str]:
    """Lines as pyinfra reads them from a session: split on newlines, none after a final one."""
    lines = data.decode("utf-8", errors="replace").split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def driver_command() -> str:
    """The session's command line: the driver, given to the login shell as `sh -c`. Nothing
    secret: every question brings its own nonce on stdin."""
    return f"exec /bin/sh -c {shlex.quote(_DRIVER)} kitty-fact-shell"


def _open_over_ssh(host) -> FactShell | None:
    client = getattr(host.connector, "client", None)
    transport = client.get_transport() if client is not None else None
    if transport is None or not transport.is_active():
        return None
    channel = transport.open_session()
    channel.exec_command(driver_command())
    logger.debug("Fact shell opened on %s", host.name)
    return FactShell(channel.sendall, lambda: channel.recv(65536), close=channel.close)


def shell_for(host) -> FactShell | None:
    """The host's fact shell, opened at its first fact; None where there is none (not SSH,
    not connected, or it broke)."""
    from pyinfra.connectors.ssh import SSHConnector

    if not isinstance(host.connector, SSHConnector) or os.environ.get("KITTY_FACT_SHELL") == "0":
        return None
    client = getattr(host.connector, "client", None)
    held = host.__dict__.get(_ATTR)
    # A reconnected host has a new client: the old session went with the old one.
    if held is not None and held[0] is client:
        return held[1] if held[1] is not None and not held[1].broken else None
    try:
        shell = _open_over_ssh(host)
    except Exception as error:  # noqa: BLE001 -- any failure: sessions per command, as pyinfra does
        logger.debug("No fact shell on %s: %s", host.name, error)
        shell = None
    host.__dict__[_ATTR] = (client, shell)
    return shell


def run_fact_command(host, command, print_output=False, print_input=False, **arguments):
    """pyinfra's `run_shell_command` for a fact's command, over the fact shell.
    None where the fact shell cannot take it: the caller runs it as pyinfra does."""
    from pyinfra.api.output import echo, format_text
    from pyinfra.connectors.util import (
        CommandOutput,
        OutputLine,
        execute_command_with_sudo_retry,
        make_unix_command_for_host,
    )

    if arguments.get("_get_pty") or arguments.get("_stdin") or arguments.get("_timeout"):
        return None
    shell = shell_for(host)
    if shell is None or not shell.lock.acquire(blocking=False):
        return None
    success_codes = arguments.pop("_success_exit_codes", None)
    for key in ("_get_pty", "_stdin", "_timeout"):
        arguments.pop(key, None)
    try:

        def execute():
            unix_command = make_unix_command_for_host(host.state, host, command, **arguments)
            logger.debug("Running command on %s over the fact shell: %s", host.name, unix_command)
            if print_input:
                echo(f"{host.print_prefix}>>> {unix_command}", err=True)
            status, stdout, stderr = shell.run(unix_command.get_raw_value())
            logger.debug("Fact shell exit status: %i", status)
            if print_output:
                for line in stdout:
                    echo(f"{host.print_prefix}{line}", err=True)
                for line in stderr:
                    echo(f"{host.print_prefix}{format_text(line, 'red')}", err=True)
            return status, CommandOutput(
                [OutputLine("stdout", line) for line in stdout] + [OutputLine("stderr", line) for line in stderr]
            )

        try:
            status, output = execute_command_with_sudo_retry(host, arguments, execute)
        except Exception as error:  # noqa: BLE001 -- facts are read-only: the same command again, in a session
            logger.debug("Fact shell on %s broke (%s): a session per command from here", host.name, error)
            shell.broken = True
            return None
    finally:
        # Broken here, or interrupted half-way (a greenlet killed, Ctrl-C: `run` left it broken): for good.
        if shell.broken:
            shell.close()
        shell.lock.release()
    return (status in success_codes) if success_codes else status == 0, output
