"""backup.py and restore.py on a real sandbox host: Postgres, Redis, the S3 store's buckets
and the .env through restic, and back.

Rows, keys and objects of our own go in, a backup is taken, the volumes are destroyed,
the restore brings back the same rows, keys and objects; a damaged repository is refused
with the host unchanged; a backup killed halfway leaves no snapshot restore would take;
the stack's secrets (the S3 keys too) never show in the repository, the output or the logs.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox import converge as sandbox_converge
from tasks.app import secrets
from tasks.host import layout
from tasks.runbook import restic
from tests.e2e.conftest import Converge, sandbox_config, ssh

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def command(name: str, deploy: str, *args: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, **sandbox_converge.sandbox_env(name), **sandbox_converge.QUIET_HF}
    argv = [sys.executable, "-m", "pyinfra", "inventory.py", deploy, "-y", "--json"]
    return [*argv, "--group-data", str(sandbox_converge.GROUP_DATA), *args], env


def run(name: str, deploy: str, *args: str) -> Converge:
    """`pyinfra inventory.py <deploy>` against the sandbox, as an admin laptop runs it."""
    argv, env = command(name, deploy, *args)
    result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    try:
        results = json.loads(result.stdout) if result.stdout.strip() else None
    except ValueError:
        results = None
    return Converge(result.returncode, results, result.stdout + result.stderr)


def container(service: str) -> str:
    return f"{sandbox_config().stack.project_name}-{service}-1"


def sql(query: str) -> str:
    psql = f'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -tAc "{query}"'
    out = subprocess.run(["docker", "exec", container("postgres"), "sh", "-c", psql], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def redis(*args: str) -> str:
    out = subprocess.run(["docker", "exec", container("redis"), "redis-cli", *args], capture_output=True, text=True)
    return out.stdout.strip()


def state() -> tuple[str, str, str]:
    """(row count, checksum of the rows, checksum of our keys)."""
    rows = sql("SELECT count(*) || ' ' || md5(string_agg(id || ':' || note, ',' ORDER BY id)) FROM backup_probe")
    keys = sorted(redis("KEYS", "probe:*").split())
    values = [redis("GET", key) for key in keys]
    return rows, str(len(keys)), "|".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))


# The S3 store, seen from this machine with rclone 1.75.2 (the one the fixture's image serves
# with, sandbox/app-fixture/make-app-mirror.sh); its keys only in rclone's environment.
RCLONE = ROOT / ".sandbox" / "s3-image" / "rclone"
BUCKET = "kitty-artifacts"


class Hidden(dict):
    """Secrets as values: a failing test's traceback prints its locals, never these."""

    def __repr__(self) -> str:
        return "<secrets, not shown>"


class HiddenList(list):
    def __repr__(self) -> str:
        return "<secrets, not shown>"


def s3(*args: str, check: bool = True) -> str:
    cfg = sandbox_config()
    keys = Hidden(secrets.secret_values(cfg.stack, ROOT))
    env = Hidden({k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))})
    env |= {
        "RCLONE_CONFIG": "/dev/null",
        "RCLONE_CONFIG_T_TYPE": "s3",
        "RCLONE_CONFIG_T_PROVIDER": "Minio",
        "RCLONE_CONFIG_T_ENDPOINT": f"http://127.0.0.1:{cfg.stack.services['minio'].port}",
        "RCLONE_CONFIG_T_ACCESS_KEY_ID": keys[cfg.backup.s3_access_key_secret],
        "RCLONE_CONFIG_T_SECRET_ACCESS_KEY": keys[cfg.backup.s3_secret_key_secret],
    }
    out = subprocess.run([str(RCLONE), *args], env=env, capture_output=True, text=True, timeout=300)
    assert not check or out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def put_objects(folder: Path, sizes: dict[str, int]) -> None:
    """Objects of our own (seeded bytes, nested names) into BUCKET, and an empty bucket beside it."""
    for name, size in sizes.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        seed = hashlib.sha256(name.encode()).digest()
        path.write_bytes((seed * (size // len(seed) + 1))[:size])
    for bucket in {BUCKET, "kitty-empty"} - {name.rstrip("/") for name in s3("lsf", "--dirs-only", "t:").split()}:
        s3("mkdir", f"t:{bucket}")
    s3("copy", str(folder), f"t:{BUCKET}")


def objects() -> tuple[list[str], list[str]]:
    """(the buckets, `md5 name` of every object of BUCKET): counts and checksums to compare."""
    buckets = sorted(s3("lsf", "--dirs-only", "t:").split())
    return buckets, sorted(s3("md5sum", f"t:{BUCKET}").splitlines())


@pytest.fixture(scope="module")
def canaries() -> list[str]:
    cfg = sandbox_config()
    values = list(secrets.secret_values(cfg.stack, ROOT).values())
    # The restic password too: it lives in the same secrets file.
    values += [secrets.parse_dotenv((ROOT / cfg.stack.secrets_file).read_text(), "")[cfg.backup.password_secret]]
    assert values, "the sandbox's secrets file holds no secret to look for"
    return HiddenList(values)


def shown(canaries: list[str], text: str) -> int:
    """How many of the secrets show in text (never which: a failure must not print them)."""
    return sum(secret in text for secret in canaries)


def files_with(sandbox: str, canaries: list[str], folder: str, exclude: str = "") -> list[str]:
    """The files under folder (on the host) holding any of the secrets in clear."""
    grep = "sudo grep -rlF" + (f" --exclude={exclude}" if exclude else "")
    found = [ssh(sandbox, f"{grep} -- '{secret}' {folder}", check=False) for secret in canaries]
    assert all(out.returncode in (0, 1) for out in found), "grep failed on the host"
    return sorted({line for out in found for line in out.stdout.split()})


def test_backup_destroy_restore_and_refusal(sandbox, first_converge, canaries, tmp_path):
    cfg = sandbox_config()
    sql("DROP TABLE IF EXISTS backup_probe; CREATE TABLE backup_probe (id int PRIMARY KEY, note text)")
    sql("INSERT INTO backup_probe SELECT g, md5(g::text) FROM generate_series(1, 500) g")
    for i in range(50):
        redis("SET", f"probe:{i}", f"value-{i}")
    before = state()
    assert before[0].startswith("500 ") and before[1] == "50"
    sizes = {f"parts/part-{i}.stl": 1000 * i + 7 for i in range(1, 25)} | {"big.step": 3_000_000, "zero": 0}
    put_objects(tmp_path / "objects", sizes)
    stored = objects()
    assert stored[0] == [f"{BUCKET}/", "kitty-empty/"] and len(stored[1]) == len(sizes)

    taken = run(sandbox, "backup.py")
    assert taken.code == 0, taken.output[-4000:]
    assert not shown(canaries, taken.output), "a secret of the stack shows in backup.py's output"
    assert "snapshot" in taken.output and "restic forget --prune" in taken.output, taken.output[-3000:]
    assert f"s3 {BUCKET}  {len(sizes)} objects" in taken.output, taken.output[-3000:]

    # The repository holds the .env encrypted: no canary in clear anywhere under the backup folder.
    folder = layout.backup_dir(cfg)
    # (The restic password's own 0600 file excepted: that is where it belongs.)
    assert ssh(sandbox, f"sudo stat -c %a {restic.password_file(cfg)}").stdout.strip() == "600"
    assert not files_with(sandbox, canaries, folder, exclude="restic-password"), f"a secret in clear under {folder}"
    assert not ssh(sandbox, f"sudo ls {folder}/staging", check=False).stdout.strip()

    # The volumes destroyed: an empty database and an empty Redis.
    project = cfg.stack.project_name
    subprocess.run(["docker", "compose", "-p", project, "down", "-v"], check=True, capture_output=True)

    restored = run(sandbox, "restore.py", "--data", "backup=latest")
    assert restored.code == 0, restored.output[-5000:]
    assert not shown(canaries, restored.output), "a secret of the stack shows in restore.py's output"
    assert state() == before
    assert objects() == stored, "the buckets or their objects differ after the restore"
    assert f"s3 {BUCKET}  restored: {len(sizes)} objects, each compared" in restored.output
    assert "verified" in restored.output and "every service started and healthy" in restored.output
    # Nor in the logs: the host's, and the S3 store's own.
    store = subprocess.run(["docker", "logs", container("minio")], capture_output=True, text=True)
    assert not shown(canaries, store.stdout + store.stderr), "a secret of the stack shows in the S3 store's log"
    assert not files_with(sandbox, canaries, cfg.paths.logs_dir), "a secret in clear in the host's logs"
    mode = ssh(sandbox, f"sudo stat -c %a {cfg.paths.kitty_root}/{cfg.stack.env_file}").stdout.strip()
    assert mode == "600"

    # A repository with one file altered: refused, naming why; the host is unchanged. The byte is
    # appended: `restic check` then finds the pack's size wrong whichever snapshot it belongs to (a
    # byte changed inside it is only found when the restore reads that blob, and the first pack
    # `find` lists may hold only the first restore's safety snapshot).
    sql("INSERT INTO backup_probe VALUES (9999, 'after the backup')")
    changed = state()
    repo = restic.repository(cfg)
    pack = ssh(sandbox, f"sudo find {repo}/data -type f | head -n 1").stdout.strip()
    ssh(sandbox, f"printf X | sudo tee -a {pack} >/dev/null")
    refused = run(sandbox, "restore.py", "--data", "backup=latest")
    assert refused.code != 0
    assert "restic check failed" in refused.output or "restore --verify" in refused.output, refused.output[-3000:]
    assert state() == changed and objects() == stored


def overrides(folder: Path, **backup) -> str:
    """A group_data folder whose kitty_backup (whole) has these settings."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "all.py").write_text(f"kitty_backup = {backup!r}\n")
    return str(folder)


def snapshots(sandbox: str, repository: str) -> list[str]:
    cfg = sandbox_config()
    env = f"RESTIC_REPOSITORY={repository} RESTIC_PASSWORD_FILE={restic.password_file(cfg)}"
    out = ssh(sandbox, f"sudo env {env} restic snapshots --json --no-lock").stdout
    return sorted(snap["short_id"] for snap in json.loads(out or "[]"))


def test_a_backup_killed_halfway_leaves_no_snapshot_restore_would_take(sandbox, first_converge, tmp_path):
    """A good backup, then one killed (SIGKILL, the script and its children, by PID) while it
    copies a bucket: no new snapshot; restore.py `latest` takes the good one, and the data is
    what it was."""
    cfg = sandbox_config()
    # A repository of its own: the test above damages the default one on purpose.
    repository = f"{layout.backup_dir(cfg)}/repo-killed"
    good = overrides(tmp_path / "good", repository=repository)
    # Throttled so the copy of a 6 MB object takes ~12 s: time to kill it while it runs.
    slow = overrides(tmp_path / "slow", repository=repository, s3_bwlimit="512K")
    # Data of its own too (it runs alone with -k as well as after the test above).
    sql("CREATE TABLE IF NOT EXISTS backup_probe (id int PRIMARY KEY, note text)")
    sql("INSERT INTO backup_probe SELECT g, 'killed ' || g FROM generate_series(20001, 20100) g ON CONFLICT DO NOTHING")
    redis("SET", "probe:killed", "before the killed backup")
    put_objects(tmp_path / "objects", {"slow/big.bin": 6_000_000, "small.txt": 10})
    first = run(sandbox, "backup.py", "--group-data", good)
    assert first.code == 0, first.output[-4000:]
    kept = snapshots(sandbox, repository)
    assert len(kept) == 1
    before, stored = state(), objects()

    argv, env = command(sandbox, "backup.py", "--group-data", slow)
    backup = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)  # fmt: skip
    try:
        # The script's PID (written beside its staging folder), once the bucket copy runs.
        stage = f"{layout.backup_dir(cfg)}/staging"
        pid = ""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and backup.poll() is None:
            probe = ssh(sandbox, f"sudo sh -c 'test -d {stage}.s3/{BUCKET} && cat {stage}.pid'", check=False)
            pid = probe.stdout.strip()
            if pid:
                break
            time.sleep(0.5)
        assert pid.isdigit(), f"the backup never reached the bucket copy: {backup.poll()}"
        # Long enough for a progress line of the copy (every 5 s), well before its end (~18 s).
        time.sleep(7)
        # SIGKILL runs no trap: the script and its children (rclone), as a power cut would.
        ssh(sandbox, f"sudo sh -c 'kill -KILL {pid} $(pgrep -P {pid})'")
        output, _ = backup.communicate(timeout=120)
    finally:
        if backup.poll() is None:
            os.killpg(backup.pid, signal.SIGKILL)
            backup.wait()
    assert backup.returncode != 0, output[-3000:]
    assert f"s3: copying bucket {BUCKET}" in output and "ETA" in output, output[-3000:]
    assert snapshots(sandbox, repository) == kept, "a killed backup left a snapshot"

    restored = run(sandbox, "restore.py", "--group-data", good, "--data", "backup=latest")
    assert restored.code == 0, restored.output[-5000:]
    assert f"snapshot {kept[0]}" in restored.output, restored.output[-3000:]
    # The killed backup's staging (the .env in clear among it) is gone.
    assert "its staging removed" in restored.output, restored.output[-3000:]
    assert not ssh(sandbox, f"sudo ls -d {stage} {stage}.s3 {stage}.pid", check=False).stdout.strip()
    assert state() == before and objects() == stored
