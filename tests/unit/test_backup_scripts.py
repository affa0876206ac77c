"""backup.py's and restore.py's host scripts, run for real as root under dash, busybox sh and bash,
against the links an account that owns the app's folder can plant (issue 26, items 1 and 3).

The scripts run as root on the host; the app's checkout (and its .env) belongs to the service
account, which can swap any name in that folder for a link at any moment. These tests make the
folder belong to `nobody`, run the scripts as root with a stand-in `sudo` (util-linux's setpriv:
it keeps the environment, so the PATH of these tests reaches the account's commands too) and a
stand-in `restic` over plain folders, and check that root never reads, writes, chmods or chowns
through such a link, and that a snapshot's parts are plain files with plain names.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tasks.runbook import restic

SHELLS = ["dash", "busybox", "bash"]
OWNER = "nobody"
SECRET = "ROOT-ONLY-canary-4e1d"

SUDO = """#!/bin/sh
# sudo -n -u USER -- COMMAND...: as the scripts call it; here (as root) through setpriv.
[ "$1" = -n ] && shift
[ "$1" = -u ] || { echo "sudo stand-in: unexpected $*" >&2; exit 2; }
user=$2
shift 2
[ "$1" = -- ] && shift
exec /usr/bin/setpriv --reuid="$user" --regid="$(id -g "$user")" --clear-groups -- "$@"
"""

RESTIC = """#!/bin/sh
# restic over folders: $FAKE_RESTIC/snapshot is the one snapshot; `backup` copies its folder to stored/.
case $1 in
    cat | check | init | forget) exit 0 ;;
    snapshots) echo '[{"short_id":"abcd1234","tags":["kitty-ops","backup"]}]' ;;
    restore)
        target=$4
        mkdir -p "$target"
        cp -a "$FAKE_RESTIC/snapshot/." "$target/"
        ;;
    backup) cp -a . "$FAKE_RESTIC/stored" ;;
    *) echo "restic stand-in: unexpected $*" >&2; exit 2 ;;
esac
"""


def _need_root_tools() -> None:
    missing = [tool for tool in ("dash", "busybox", "/usr/bin/setpriv") if not shutil.which(tool)]
    if os.geteuid() != 0 or missing:
        why = f"needs root and {', '.join(missing) or 'nothing else'}"
        if os.environ.get("CI"):
            pytest.fail(f"the backup scripts' link tests {why}")
        pytest.skip(why)


@pytest.fixture
def base():
    """A folder `nobody` can reach (pytest's own tmp folders are 0700 root); removed after."""
    _need_root_tools()
    folder = Path(tempfile.mkdtemp(prefix="kitty-backup-scripts."))
    folder.chmod(0o711)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def tools(tmp_path_factory) -> dict[str, Path]:
    """Per shell, a folder first on PATH: the stand-ins, and for busybox its applets alone."""
    _need_root_tools()
    root = Path(tempfile.mkdtemp(prefix="kitty-backup-tools."))
    root.chmod(0o755)
    shims = root / "shims"
    shims.mkdir()
    for name, text in (("sudo", SUDO), ("restic", RESTIC)):
        (shims / name).write_text(text)
        (shims / name).chmod(0o755)
    only_busybox = root / "busybox"
    only_busybox.mkdir()
    subprocess.run(["busybox", "--install", "-s", str(only_busybox)], check=True)
    for name in ("sudo", "restic"):
        (only_busybox / name).unlink(missing_ok=True)
        (only_busybox / name).symlink_to(shims / name)
    for folder in (root, shims, only_busybox):
        folder.chmod(0o755)
    yield {"shims": shims, "busybox": only_busybox, "root": root}
    shutil.rmtree(root, ignore_errors=True)


def run_script(shell: str, tools: dict, name: str, env: dict, first: Path | None = None):
    """templates/<name> as tasks/runbook/restic.py sends it (`sh -s`, the script on stdin), as root.

    `first`: a folder put ahead of everything on PATH (a stand-in that plays the attacker)."""
    path = str(tools["busybox"]) if shell == "busybox" else f"{tools['shims']}:/usr/local/bin:/usr/bin:/bin"
    if first is not None:
        path = f"{first}:{path}"
    argv = ["/usr/bin/busybox", "sh", "-s"] if shell == "busybox" else [shutil.which(shell), "-s"]
    return subprocess.run(
        argv,
        input=restic.script(name),
        env={"PATH": path, "LC_ALL": "C", "HOME": "/root", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def owned_by_nobody(path: Path, mode: int) -> None:
    path.mkdir(mode=mode)
    uid = int(subprocess.run(["id", "-u", OWNER], capture_output=True, text=True, check=True).stdout)
    os.chown(path, uid, -1)
    path.chmod(mode)


def victim(base: Path) -> Path:
    """A root file the account must never get: 0644 here so a chmod or chown of it shows."""
    path = base / "victim"
    path.write_text(f"{SECRET}\n")
    path.chmod(0o644)
    return path


def untouched(path: Path) -> None:
    info = path.lstat()
    assert (info.st_uid, info.st_mode & 0o7777) == (0, 0o644), "root changed a file through a planted link"
    assert path.read_text() == f"{SECRET}\n"


# --- restore: the .env -----------------------------------------------------------------------


def restore_env(base: Path, app: Path) -> dict:
    work = base / "work"
    (work / "parts").mkdir(parents=True)
    work.chmod(0o700)
    (work / "parts" / "app.env").write_text("RESTORED='yes'\n")
    # Every compose call recorded: a refusal must come before any of them.
    compose = base / "compose"
    compose.write_text(f'#!/bin/sh\necho "$*" >>{base / "compose-calls"}\n')
    compose.chmod(0o755)
    return {
        "WORK": str(work),
        "COMPOSE": str(compose),
        "PG_SERVICE": "",
        "REDIS_SERVICE": "",
        "WRITERS": "",
        "ENV_FILE": str(app / ".env"),
        "ENV_OWNER": OWNER,
        "TIMEOUT": "1",
    }


@pytest.mark.parametrize("shell", SHELLS)
def test_restore_writes_the_env_as_its_owner(shell, tools, base):
    app = base / "app"
    owned_by_nobody(app, 0o755)
    (app / ".env").write_text("OLD='1'\n")
    done = run_script(shell, tools, "backup-restore.sh", restore_env(base, app))
    assert done.returncode == 0, done.stdout + done.stderr
    env = app / ".env"
    assert env.read_text() == "RESTORED='yes'\n" and not env.is_symlink()
    info = env.stat()
    assert info.st_uid != 0 and info.st_mode & 0o777 == 0o600
    assert sorted(p.name for p in app.iterdir()) == [".env"]


@pytest.mark.parametrize("shell", SHELLS)
def test_restore_refuses_an_env_that_is_a_link_before_it_changes_anything(shell, tools, base):
    target = victim(base)
    app = base / "app"
    owned_by_nobody(app, 0o755)
    (app / ".env").symlink_to(target)
    done = run_script(shell, tools, "backup-restore.sh", restore_env(base, app))
    assert done.returncode != 0
    assert "is a symbolic link" in done.stdout + done.stderr
    untouched(target)
    assert not (base / "compose-calls").exists(), "the restore changed the stack before refusing"


@pytest.mark.parametrize("shell", SHELLS)
def test_restore_never_chowns_through_a_link_swapped_in_between_two_steps(shell, tools, base):
    """The reported race: the account swaps the restore's new file for a link to a root file
    between its write and its chmod/chown. A stand-in `chmod` plays the account, at that moment."""
    target = victim(base)
    app = base / "app"
    owned_by_nobody(app, 0o755)
    attacker = base / "attacker"
    attacker.mkdir()
    attacker.chmod(0o755)
    (attacker / "chmod").write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do case $arg in *.env.restore.*) '
        f'rm -f "$arg"; ln -s {target} "$arg" ;; esac; done\n'
        'exec /bin/chmod "$@"\n'
    )
    (attacker / "chmod").chmod(0o755)
    run_script(shell, tools, "backup-restore.sh", restore_env(base, app), first=attacker)
    untouched(target)


# --- backup: the .env -----------------------------------------------------------------------


def backup_env(base: Path, app: Path) -> dict:
    fake = base / "restic"
    fake.mkdir()
    return {
        "STAGE": str(base / "stage"),
        "COMPOSE": "false",
        "PG_SERVICE": "",
        "REDIS_SERVICE": "",
        "ENV_FILE": str(app / ".env"),
        "ENV_OWNER": OWNER,
        "KITTY_ROOT": str(app),
        "LLAMA_ROOT": str(base / "llama"),
        "DEPLOYED": "{}",
        "TAG": restic.BACKUP_TAG,
        "SAFETY": "0",
        "TIMEOUT": "1",
        "KEEP": "--keep-last 1",
        "RESTIC_REPOSITORY": str(base / "repo"),
        "RESTIC_PASSWORD_FILE": str(base / "password"),
        "FAKE_RESTIC": str(fake),
    }


def stored(base: Path) -> dict[str, str]:
    folder = base / "restic" / "stored"
    return {p.name: p.read_text() for p in folder.iterdir()} if folder.exists() else {}


@pytest.mark.parametrize("shell", SHELLS)
def test_backup_stores_the_env_read_as_its_owner(shell, tools, base):
    app = base / "app"
    owned_by_nobody(app, 0o755)
    (app / ".env").write_text("KEPT='1'\n")
    os.chown(app / ".env", int(subprocess.run(["id", "-u", OWNER], capture_output=True, text=True).stdout), -1)
    (app / ".env").chmod(0o600)
    done = run_script(shell, tools, "backup-take.sh", backup_env(base, app))
    assert done.returncode == 0, done.stdout + done.stderr
    assert stored(base)["app.env"] == "KEPT='1'\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_backup_refuses_an_env_that_is_a_link_and_stores_nothing_of_its_target(shell, tools, base):
    target = victim(base)
    target.chmod(0o600)
    app = base / "app"
    owned_by_nobody(app, 0o755)
    (app / ".env").symlink_to(target)
    done = run_script(shell, tools, "backup-take.sh", backup_env(base, app))
    assert done.returncode != 0 and "is a symbolic link" in done.stdout + done.stderr
    assert SECRET not in "".join(stored(base).values())


@pytest.mark.parametrize("shell", SHELLS)
def test_backup_reads_the_env_with_its_owners_rights_never_roots(shell, tools, base):
    """Whatever the name points to when it is read (a link swapped in after any check), only what
    the account may read can be read: a file only root may read fails the backup."""
    app = base / "app"
    owned_by_nobody(app, 0o755)
    (app / ".env").write_text(f"{SECRET}\n")
    (app / ".env").chmod(0o600)  # root's: the account cannot read it
    done = run_script(shell, tools, "backup-take.sh", backup_env(base, app))
    assert done.returncode != 0 and f"could not read {app}/.env as {OWNER}" in done.stdout + done.stderr
    assert SECRET not in "".join(stored(base).values())


# --- verify: the snapshot's parts ---------------------------------------------------------


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def snapshot(base: Path, parts: dict[str, bytes], manifest: list[tuple[str, bytes]] | None = None) -> Path:
    """A snapshot as backup-take.sh stores it: the staging folder's path, its parts, manifest.tsv."""
    folder = base / "restic" / "snapshot" / "opt" / "kitty" / "backup" / "staging"
    folder.mkdir(parents=True)
    for name, data in parts.items():
        (folder / name).write_bytes(data)
    listed = manifest if manifest is not None else list(parts.items())
    lines = "".join(f"{name}\t{len(data)}\t{sha256(data)}\n" for name, data in listed)
    (folder / "manifest.tsv").write_text(lines)
    return folder


def verify_env(base: Path) -> dict:
    (base / "restic").mkdir(exist_ok=True)
    return {
        "SNAPSHOT": "latest",
        "WORK": str(base / "backup" / "restore"),
        "REQUIRED": "deployed.json",
        "RESTIC_REPOSITORY": str(base / "repo"),
        "RESTIC_PASSWORD_FILE": str(base / "password"),
        "FAKE_RESTIC": str(base / "restic"),
    }


def verify(shell: str, tools: dict, base: Path):
    (base / "backup").mkdir(mode=0o700, exist_ok=True)
    return run_script(shell, tools, "backup-verify.sh", verify_env(base))


GOOD = {"deployed.json": b"{}\n", "redis.rdb": b"REDIS0011 data", "app.env": b"A='1'\n"}


@pytest.mark.parametrize("shell", SHELLS)
def test_verify_puts_a_sound_snapshots_parts_in_a_fresh_private_folder(shell, tools, base):
    (base / "restic").mkdir()
    snapshot(base, GOOD)
    # Whatever was there before (a link to elsewhere included) is not where the parts go.
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    (base / "backup").mkdir(mode=0o700)
    (base / "backup" / "restore").symlink_to(elsewhere)
    done = verify(shell, tools, base)
    assert done.returncode == 0, done.stdout + done.stderr
    work = base / "backup" / "restore"
    assert not work.is_symlink() and work.stat().st_mode & 0o777 == 0o700
    assert {p.name for p in (work / "parts").iterdir()} == {*GOOD, "manifest.tsv"}
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("shell", SHELLS)
def test_verify_refuses_a_part_that_is_a_link_even_with_the_targets_size_and_hash(shell, tools, base):
    """The reproduction: redis.rdb a link to a host file whose size and sha256 the manifest copies;
    root would then chmod 644 that file and copy it into a container."""
    target = victim(base)
    (base / "restic").mkdir()
    folder = snapshot(
        base, {"deployed.json": b"{}\n"}, [("deployed.json", b"{}\n"), ("redis.rdb", target.read_bytes())]
    )
    (folder / "redis.rdb").symlink_to(target)
    done = verify(shell, tools, base)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "bad\tredis.rdb: not a regular file" in done.stdout
    untouched(target)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("name", ["../outside.rdb", "sub/inner.rdb", "..", "a..b"])
def test_verify_refuses_a_manifest_name_that_is_not_a_plain_name(shell, tools, base, name):
    (base / "restic").mkdir()
    data = b"planted"
    folder = snapshot(base, GOOD, [*GOOD.items(), (name, data)])
    # The name resolves to a file with that very content: only the name itself can be refused.
    (folder / "sub").mkdir()
    for path in (folder / "sub" / "inner.rdb", folder.parent / "outside.rdb", folder / "a..b"):
        path.write_bytes(data)
    done = verify(shell, tools, base)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "not the name of a part" in done.stdout


@pytest.mark.parametrize("shell", SHELLS)
def test_verify_refuses_a_folder_or_a_part_the_manifest_does_not_list(shell, tools, base):
    (base / "restic").mkdir()
    folder = snapshot(base, GOOD)
    (folder / ".hidden").write_bytes(b"x")
    done = verify(shell, tools, base)
    assert done.returncode == 3 and "bad\t.hidden: in the snapshot, not in the manifest" in done.stdout
    shutil.rmtree(base / "restic" / "snapshot")
    shutil.rmtree(base / "backup", ignore_errors=True)
    folder = snapshot(base, GOOD)
    (folder / "redis.rdb").unlink()
    (folder / "redis.rdb").mkdir()
    done = verify(shell, tools, base)
    assert done.returncode == 3 and "bad\tredis.rdb: not a regular file" in done.stdout
