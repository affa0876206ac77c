"""Commands that run as root or as a file's owner, executed for real on this machine's shells.

A host file name is data, never shell (the old start scripts' PID files); the .env
is written without following a link planted in its folder, and nothing is left
behind when the write fails (issue 18).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tasks.engine.operations import replace_from_stdin
from tasks.inference.server_facts import LegacyServerPids

SHELLS = [shell for shell in (["dash"], ["busybox", "sh"], ["bash", "--posix"]) if shutil.which(shell[0])]


def run(shell: list[str], command: str, stdin: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*shell, "-c", command], input=stdin, capture_output=True, text=True, timeout=30, cwd=cwd)


@pytest.mark.parametrize("shell", SHELLS, ids=lambda shell: shell[0])
def test_a_crafted_pid_file_name_is_never_run_nor_reported(shell, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    pwned = tmp_path / "pwned"
    (logs / "llamacpp-q4.pid").write_text("4242\n")
    # The reproduction: a name that is a command when pasted unquoted into `rm -f`.
    (logs / "llamacpp-x;touch pwned;.pid").write_text("1\n")
    # A newline in the name would forge a second line of the fact's output (a relative file, PID 1).
    (logs / "llamacpp-y\nllamacpp-z.pid|1|llama-server.pid").write_text("1\n")
    (logs / "llamacpp-link.pid").symlink_to("/etc/hostname")
    fact = LegacyServerPids()
    done = run(shell, fact.command(str(logs)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = fact.process(done.stdout.splitlines())
    assert [(name, pid) for name, pid, _ in found] == [(f"{logs}/llamacpp-q4.pid", 4242)]
    assert not pwned.exists()


@pytest.mark.parametrize("shell", SHELLS, ids=lambda shell: shell[0])
def test_the_env_write_replaces_a_planted_link_and_never_writes_through_it(shell, tmp_path):
    target = tmp_path / "target"
    target.write_text("untouched\n")
    target.chmod(0o644)
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / ".env").symlink_to(target)
    done = run(shell, replace_from_stdin(f"{folder}/.env"), stdin="SECRET='s3cr3t'\n")
    assert done.returncode == 0, done.stderr
    assert target.read_text() == "untouched\n" and (target.stat().st_mode & 0o777) == 0o644
    env = folder / ".env"
    assert not env.is_symlink() and env.read_text() == "SECRET='s3cr3t'\n"
    assert (env.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in folder.iterdir()) == [".env"]


@pytest.mark.parametrize("shell", SHELLS, ids=lambda shell: shell[0])
def test_a_link_to_a_folder_is_replaced_not_moved_into(shell, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / ".env").symlink_to(elsewhere)
    done = run(shell, replace_from_stdin(f"{folder}/.env"), stdin="A='1'\n")
    assert done.returncode == 0, done.stderr
    assert list(elsewhere.iterdir()) == [] and (folder / ".env").read_text() == "A='1'\n"


@pytest.mark.parametrize("shell", SHELLS, ids=lambda shell: shell[0])
def test_a_write_cut_short_leaves_no_copy_behind(shell, tmp_path):
    """`cat` fails mid-way (stdin is a folder): the old file stays, the temporary one is removed by the trap."""
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / ".env").write_text("OLD='1'\n")
    command = replace_from_stdin(f"{folder}/.env").replace('cat >"$tmp"', 'cat <"$0" >"$tmp"')
    done = subprocess.run([*shell, "-c", command, str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert (folder / ".env").read_text() == "OLD='1'\n" and sorted(p.name for p in folder.iterdir()) == [".env"]
