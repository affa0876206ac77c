"""Our own pyinfra operations that have no better home."""

from __future__ import annotations

import hashlib
import shlex
from io import StringIO

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, FunctionCommand, OperationError, StringCommand, operation
from pyinfra.facts.files import File, Sha256File


@operation()
def run_with_progress(command: list[str], env: dict[str, str] | None = None):
    """Run a long command (a build, a download) with its output shown to the operator as it comes.

    Only planned when a fact says the work is needed; the command prints its
    own progress and, on failure, what failed and where its log is.
    """
    yield FunctionCommand(stream, (shlex.join(command), env or {}), {})


def stream(state, host, command: str, env: dict[str, str], **connector_arguments) -> bool:
    """FunctionCommand target: run `command` with its output shown as it comes.

    Through the host's connector with print_output: a plain StringCommand's
    output is only shown at -vvv, leaving minutes of silence.
    """
    ok, _ = host.run_shell_command(command, print_output=True, _env=env, **connector_arguments)
    return ok


@operation()
def secret_file(content: str, dest: str, user: str):
    """A file only `user` can read, whose contents never reach pyinfra's output.

    Not files.put: its --diff prints old and new contents, and the old ones come
    from a `cat` fact that -vvv echoes. Compared by sha256 only; created 0600
    before the upload writes into it, so it is never readable by others.
    """
    wanted = hashlib.sha256(content.encode()).hexdigest()
    current = host.get_fact(File, path=dest)
    if current is False:
        raise OperationError(f"{dest} exists and is not a file")
    same = bool(current) and host.get_fact(Sha256File, path=dest) == wanted
    right_mode = bool(current) and current["mode"] == 600 and current["user"] == user
    if same and right_mode:
        host.noop(f"{dest} is up to date")
        return
    host.log(f"{'Will update' if current else 'Will create'} {dest} (secrets: contents not shown)", logger.info)
    quoted = shlex.quote(dest)
    yield StringCommand(f"umask 077 && touch {quoted} && chmod 600 {quoted}")
    if not same:
        yield FileUploadCommand(StringIO(content), dest)
    if not current or current["user"] != user:
        yield StringCommand(f"chown {shlex.quote(user)} {quoted}")
