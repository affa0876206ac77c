"""remove.py's own facts, run for real under dash and busybox sh: what they tell from what a host has.

FolderEntries decides whether a folder goes whole or keeps something of the operator's;
ComposeProject whether there is anything of kitty-ops' compose project to take down (by
its label, through a stand-in docker that records what it was asked); AccountMarks whether
an account is one kitty-ops made (a stand-in dscl answers as macOS's does).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tasks.runbook.remove import AccountMarks, ComposeProject, FolderEntries
from tests.tools import busybox_path, executable, require

SHELLS = ["dash", "busybox"]


@pytest.fixture(params=SHELLS)
def shell(request, tmp_path) -> tuple[str, str]:
    """(shell, PATH): busybox with busybox's applets alone, dash with the system's tools."""
    require(request.param)
    if request.param == "busybox":
        return "busybox", busybox_path(tmp_path / "busybox-only")
    return "dash", "/usr/bin:/bin"


def answer(shell: tuple[str, str], fact, tools=None, **arguments):
    """The fact's command run by `shell`, its output processed as pyinfra does."""
    name, path = shell
    argv = [shutil.which("busybox"), "sh", "-c"] if name == "busybox" else [shutil.which(name), "-c"]
    command = fact().command(**arguments)
    env = {"PATH": f"{tools}:{path}" if tools else path, "LC_ALL": "C"}
    done = subprocess.run([*argv, command], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return fact().process(done.stdout.splitlines())


def test_folder_entries_lists_each_folder_there_hidden_names_and_spaces_included(shell, tmp_path):
    opt = tmp_path / "opt kitty"
    (opt / "llama.cpp").mkdir(parents=True)
    (opt / ".hidden").write_text("x")
    (opt / "notes of mine.txt").write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "a-link").symlink_to(opt)
    folders = [str(opt), str(empty), str(tmp_path / "missing"), str(tmp_path / "a-link")]
    found = answer(shell, FolderEntries, folders=folders)
    # A folder that is not there, or is a link, is not a folder to remove.
    assert found == {str(opt): sorted(found[str(opt)]), str(empty): []}
    assert sorted(found[str(opt)]) == [".hidden", "llama.cpp", "notes of mine.txt"]


FAKE_DOCKER = """#!/bin/sh
echo "$*" >> "$FAKE/calls"
case $1 in
info) [ -f "$FAKE/down" ] && exit 1; exit 0 ;;
ps) [ -f "$FAKE/containers" ] && echo "container kitty-brain-1" ;;
network) echo "network kitty_default" ;;
volume) echo "volume kitty_pgdata" ;;
esac
exit 0
"""


def test_compose_project_asks_by_the_projects_label_and_says_when_no_engine_answers(shell, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    tools = tmp_path / "tools"
    executable(tools / "docker", FAKE_DOCKER.replace("$FAKE", str(fake)))
    (fake / "containers").write_text("")
    found = answer(shell, ComposeProject, tools=tools, project="kitty")
    assert found == {
        "engine": True,
        "container": ["kitty-brain-1"],
        "network": ["kitty_default"],
        "volume": ["kitty_pgdata"],
    }
    asked = (fake / "calls").read_text().splitlines()
    assert [line for line in asked if line.startswith(("ps", "network", "volume"))] == [
        "ps -a --filter label=com.docker.compose.project=kitty --format container {{.Names}}",
        "network ls --filter label=com.docker.compose.project=kitty --format network {{.Name}}",
        "volume ls --filter label=com.docker.compose.project=kitty --format volume {{.Name}}",
    ]
    (fake / "down").write_text("")
    assert answer(shell, ComposeProject, tools=tools, project="kitty")["engine"] is False


def test_compose_project_without_docker_is_no_engine(tmp_path):
    # busybox's applets alone: no docker on that PATH (the system's may hold one).
    only_busybox = ("busybox", busybox_path(tmp_path / "busybox-only"))
    assert answer(only_busybox, ComposeProject, project="kitty") == ComposeProject.default()


# dscl as macOS answers `-read`: a short value on the key's line, a value with a space on the next.
FAKE_DSCL = """#!/bin/sh
case $3 in
/Users/kitty) printf 'RealName:\\n KITTY services\\n' ;;
/Groups/kitty) printf 'RealName: KITTY services\\n' ;;
/Users/staffer) printf 'RealName: Staffer\\n' ;;
*) exit 56 ;;
esac
"""
FAKE_ID = """#!/bin/sh
[ "$2" = kitty ] || [ "$2" = staffer ] || exit 1
echo 301
"""


def test_account_marks_read_the_real_name_macos_gives_either_way(shell, tmp_path):
    tools = tmp_path / "tools"
    executable(tools / "dscl", FAKE_DSCL)
    executable(tools / "id", FAKE_ID)
    ours = answer(shell, AccountMarks, tools=tools, account="kitty", mac=True)
    assert (ours["exists"], ours["user"], ours["group"]) == (True, "KITTY services", "KITTY services")
    theirs = answer(shell, AccountMarks, tools=tools, account="staffer", mac=True)
    assert (theirs["exists"], theirs["user"], theirs["group"]) == (True, "Staffer", "")
    assert answer(shell, AccountMarks, tools=tools, account="nobody-here", mac=True)["exists"] is False


def test_account_marks_on_linux_read_home_and_shell(shell, tmp_path):
    tools = tmp_path / "tools"
    executable(
        tools / "getent",
        '#!/bin/sh\n[ "$2" = kitty ] && echo "kitty:x:998:998::/opt/kitty:/usr/sbin/nologin"\ntrue\n',
    )
    found = answer(shell, AccountMarks, tools=tools, account="kitty", mac=False)
    assert (found["exists"], found["home"], found["shell"]) == (True, "/opt/kitty", "/usr/sbin/nologin")
    assert answer(shell, AccountMarks, tools=tools, account="other", mac=False)["exists"] is False
