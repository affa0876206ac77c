"""Our own pyinfra operations that have no better home."""

from __future__ import annotations

import hashlib
import shlex

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, OperationError, StringCommand, operation
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS
from pyinfra.facts.files import Directory, File, Sha256File


def connector_arguments(on_host, **overrides) -> dict:
    """The running operation's connector arguments, for a command its FunctionCommand runs itself.

    pyinfra gives a FunctionCommand's function none of them: `host.run_shell_command(cmd, _sudo=True)`
    alone runs `sudo -n`, without the run's sudo password (--same-sudo-password), its askpass
    helper, `_sudo_user` or `_env`. Every command an operation's function runs takes them from here.
    """
    found = {k: v for k, v in (on_host.current_op_global_arguments or {}).items() if k in CONNECTOR_ARGUMENT_KEYS}
    return {**found, **overrides}


@operation()
def run_with_progress(command: list[str], env: dict[str, str] | None = None):
    """Run a long command (a build, a download) with its output shown to the operator as it comes.

    Only planned when a fact says the work is needed; the command prints its
    own progress and, on failure, what failed and where its log is. The
    operation's connector arguments (`_sudo`, `_sudo_user`, `_chdir`, `_env`...)
    apply to it as to any shell command of an operation.
    """
    yield StreamedCommand(shlex.join(command), env or {})


class StreamedCommand(FunctionCommand):
    """A shell command whose output is shown as it comes (pyinfra shows a plain
    StringCommand's output only at -vvv, leaving minutes of silence).

    A FunctionCommand whose function takes `state, host` is given none of the
    operation's connector arguments: this one runs with them, as pyinfra hands
    them over at execution (so none of them, a sudo password included, is ever
    part of the command's text or repr).
    """

    def __init__(self, command: str, env: dict[str, str]):
        super().__init__(stream, (command, env), {})

    def execute(self, state, host, connector_arguments):
        command, env = self.args
        arguments = dict(connector_arguments)
        merged_env = {**(arguments.pop("_env", None) or {}), **env}
        return stream(state, host, command, merged_env, **arguments)


def stream(state, host, command: str, env: dict[str, str], **connector_arguments) -> bool:
    """Run `command` on `host` with its output shown as it comes; True when it succeeded."""
    ok, _ = host.run_shell_command(command, print_output=True, _env=env, **connector_arguments)
    return ok


@operation()
def secret_file(content: str, dest: str, user: str):
    """A file only `user` can read, whose contents never reach pyinfra's output or a shared path.

    Call it with `_sudo_user=user` (and `_sudo`) when `user` is not the connecting
    one: every step then runs as the file's owner, so a link planted in a folder
    that user controls reaches only files that user could write anyway; root never
    opens, chmods or chowns a path there. The contents travel on the command's
    stdin (never in a command line, a fact or a temporary file elsewhere) into a
    0600 file that mktemp creates beside `dest`, which `mv` then renames over it:
    rename replaces a link instead of following it, and a failed write leaves
    `dest` as it was and no copy behind.

    Not files.put: its --diff prints old and new contents, its `cat` fact is echoed
    at -vvv, and with sudo it stages the file in a predictable /tmp/pyinfra-<sha1>.
    Compared by sha256 only.
    """
    # The connectors write stdin line by line and end it with a newline: so does the file.
    content = content if content.endswith("\n") else content + "\n"
    wanted = hashlib.sha256(content.encode()).hexdigest()
    current = host.get_fact(File, path=dest)
    if current is False and host.get_fact(Directory, path=dest):
        raise OperationError(f"{dest} is a directory")
    same = bool(current) and host.get_fact(Sha256File, path=dest) == wanted
    right_mode = bool(current) and current["mode"] == 600 and current["user"] == user
    if same and right_mode:
        host.noop(f"{dest} is up to date")
        return
    what = (
        "Will replace the link or special file at" if current is False else "Will update" if current else "Will create"
    )
    host.log(f"{what} {dest} (secrets: contents not shown)", logger.info)
    yield StringCommand(replace_from_stdin(dest), _stdin=content)


def replace_from_stdin(dest: str) -> str:
    """POSIX sh: stdin into a new 0600 file beside `dest`, renamed over it; nothing left behind on failure."""
    folder, _, name = dest.rpartition("/")
    quoted, tmp_pattern = shlex.quote(dest), shlex.quote(f"{folder or '.'}/.{name}.kitty-new.XXXXXX")
    return (
        f"umask 077 && tmp=$(mktemp {tmp_pattern}) && "
        "trap 'rm -f \"$tmp\"' EXIT && trap 'exit 1' HUP INT TERM && "
        'cat >"$tmp" && chmod 600 "$tmp" && '
        # A link (or a link to a folder) is removed, never followed: mv would move into its target.
        f'{{ if [ -L {quoted} ]; then rm -f {quoted}; fi; }} && mv -f "$tmp" {quoted}'
    )


@operation()
def verified_download(src: str, dest: str, sha256: str | None, mode: str = "755"):
    """`src` at `dest`, checked against `sha256` BEFORE it is moved into place.

    Not files.download: it moves the file to `dest`, makes it executable, and only
    then compares the hash, so a tampered binary stays installed after the failure.
    Here it is fetched into a temporary file beside `dest` (removed on any failure),
    hashed, and renamed over `dest` only when it matches. `sha256` None: only for a
    file:// URL the operator controls (config.ComposePlugin refuses it otherwise).
    """
    if sha256 is not None and host.get_fact(Sha256File, path=dest) == sha256:
        host.noop(f"{dest} is the pinned file ({sha256[:12]})")
        return
    if sha256 is None and host.get_fact(File, path=dest):
        host.noop(f"{dest} exists (an unpinned file:// source: not compared)")
        return
    folder, _, name = dest.rpartition("/")
    check = (
        f'[ "$( (sha256sum "$tmp" 2>/dev/null || shasum -a 256 "$tmp") | cut -d " " -f 1)" = {shlex.quote(sha256)} ] '
        f'|| {{ echo "{name}: sha256 differs from the pinned {sha256[:12]}...: not installed" >&2; exit 1; }}'
        if sha256
        else "true"
    )
    yield (
        f"tmp=$(mktemp {shlex.quote(f'{folder}/.{name}.download.XXXXXX')}) && trap 'rm -f \"$tmp\"' EXIT && "
        f'curl -fsSL -o "$tmp" -- {shlex.quote(src)} && {check} && '
        f'chmod {shlex.quote(mode)} "$tmp" && mv -f "$tmp" {shlex.quote(dest)}'
    )
