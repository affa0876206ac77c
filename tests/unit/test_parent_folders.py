"""The folders above the models and the app (tasks/host/parent_folders.py): the fact's shell run for real
under dash, busybox sh and bash on folders made here, and the rule it feeds (issue 26, item 9)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tasks.host.parent_folders import Folder, ParentChains, findings, problem

SHELLS = [["dash"], ["busybox", "sh"], ["bash", "--posix"]]


def nobody() -> int:
    return int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True, check=True).stdout)


@pytest.fixture
def tree():
    """/<tmp>/shared (1777, root), in it eve-made (nobody's, 0755) and root-made (root's, 0755),
    open (0777, not sticky), and a link to eve-made."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the parent folder tests chown to nobody: they run as root")
        pytest.skip("needs root (chown)")
    base = Path(tempfile.mkdtemp(prefix="kitty-parents."))
    shared = base / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    for name, mode in (("eve-made", 0o755), ("root-made", 0o755), ("open", 0o777)):
        (shared / name).mkdir()
        (shared / name).chmod(mode)
    os.chown(shared / "eve-made", nobody(), -1)
    (base / "link").symlink_to(shared / "eve-made")
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def read(shell: list[str], paths: list[str]) -> dict:
    fact = ParentChains()
    done = subprocess.run([*shell, "-c", fact.command(paths, "root")], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return fact.process(done.stdout.splitlines())


@pytest.mark.parametrize("shell", SHELLS, ids=lambda shell: shell[0])
def test_a_folder_made_by_another_user_in_a_shared_one_is_named(shell, tree):
    named = {
        "kitty_paths.models_dir": f"{tree}/shared/eve-made/models",
        "kitty_paths.kitty_root": f"{tree}/shared/root-made/KITT",
    }
    answer = read(shell, list(named.values()))
    assert answer["admin"] == 0
    chain = answer["chains"][named["kitty_paths.models_dir"]]
    assert [f.path for f in chain][:3] == [f"{tree}/shared/eve-made", f"{tree}/shared", str(tree)]
    assert chain[-1].path == "/"
    lines = findings(answer, named)
    assert lines == [
        f"kitty_paths.models_dir ({tree}/shared/eve-made/models): {tree}/shared/eve-made belongs to uid "
        f"{nobody()}, neither root nor the admin (mode drwxr-xr-x): its owner can replace what is in it"
    ]


@pytest.mark.parametrize("shell", SHELLS, ids=lambda shell: shell[0])
def test_links_are_followed_to_the_folders_they_lead_to_and_missing_parts_skipped(shell, tree):
    path = f"{tree}/link/not/yet/made"
    answer = read(shell, [path])
    assert answer["chains"][path][0].path == f"{tree}/shared/eve-made"
    assert findings(answer, {"kitty_paths.kitty_root": path})


@pytest.mark.parametrize("shell", SHELLS, ids=lambda shell: shell[0])
def test_a_folder_open_to_all_without_the_sticky_bit_is_named(shell, tree):
    path = f"{tree}/shared/open/models"
    (line,) = findings(read(shell, [path]), {"kitty_paths.models_dir": path})
    assert f"{tree}/shared/open is writable by others and not sticky (mode drwxrwxrwx)" in line


def test_the_rule():
    trusted = {0, 501}
    assert problem(Folder("/Users/Shared", "drwxrwxrwt", 0), trusted) is None
    assert problem(Folder("/Users/admin", "drwxr-xr-x", 501), trusted) is None
    assert problem(Folder("/opt", "drwxr-xr-x", 0), trusted) is None
    assert "not sticky" in problem(Folder("/x", "drwxrwxr-x", 0), trusted)
    assert "not sticky" in problem(Folder("/x", "drwxr-xrwx", 501), trusted)
    # Sticky, but another user's: its owner can still replace anything in it.
    assert "uid 502" in problem(Folder("/Users/Shared/Coding", "drwxrwxrwt", 502), trusted)
    assert "uid 502" in problem(Folder("/Users/Shared/Coding", "drwxr-xr-x", 502), trusted)
