"""Our own pyinfra operations that have no better home."""

from __future__ import annotations

import shlex

from pyinfra.api import FunctionCommand, operation


@operation()
def run_with_progress(command: list[str], env: dict[str, str] | None = None):
    """Run a long command (a build, a download) with its output shown to the operator as it comes.

    Only planned when a fact says the work is needed; the command prints its
    own progress and, on failure, what failed and where its log is.
    """
    yield FunctionCommand(_stream, (shlex.join(command), env or {}), {})


def _stream(state, host, command: str, env: dict[str, str]) -> bool:
    # Through the host's connector with print_output: a plain StringCommand's
    # output is only shown at -vvv, leaving minutes of silence.
    ok, _ = host.run_shell_command(command, print_output=True, _env=env)
    return ok
