"""backup.py and restore.py on a real sandbox host: Postgres, Redis and the .env through restic, and back.

Rows and keys of our own go in, a backup is taken, the volumes are destroyed, the
restore brings back the same rows and keys; a damaged repository is refused with
the host unchanged; the stack's secrets never show in the repository or the output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import converge as sandbox_converge
from tasks import restic, secrets
from tests.e2e.conftest import Converge, sandbox_config, ssh

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def run(name: str, deploy: str, *args: str) -> Converge:
    """`pyinfra inventory.py <deploy>` against the sandbox, as an admin laptop runs it."""
    env = {**os.environ, **sandbox_converge.sandbox_env(name), **sandbox_converge.QUIET_HF}
    command = [sys.executable, "-m", "pyinfra", "inventory.py", deploy, "-y", "--json"]
    command += ["--group-data", str(sandbox_converge.GROUP_DATA), *args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
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


@pytest.fixture(scope="module")
def canaries() -> list[str]:
    cfg = sandbox_config()
    values = list(secrets.secret_values(cfg.stack, ROOT).values())
    # The restic password too: it lives in the same secrets file.
    values += [secrets.parse_dotenv((ROOT / cfg.stack.secrets_file).read_text(), "")[cfg.backup.password_secret]]
    assert values, "the sandbox's secrets file holds no secret to look for"
    return values


def test_backup_destroy_restore_and_refusal(sandbox, first_converge, canaries):
    cfg = sandbox_config()
    sql("DROP TABLE IF EXISTS backup_probe; CREATE TABLE backup_probe (id int PRIMARY KEY, note text)")
    sql("INSERT INTO backup_probe SELECT g, md5(g::text) FROM generate_series(1, 500) g")
    for i in range(50):
        redis("SET", f"probe:{i}", f"value-{i}")
    before = state()
    assert before[0].startswith("500 ") and before[1] == "50"

    taken = run(sandbox, "backup.py")
    assert taken.code == 0, taken.output[-4000:]
    for secret in canaries:
        assert secret not in taken.output, "a secret of the stack shows in backup.py's output"
    assert "snapshot" in taken.output and "restic forget --prune" in taken.output, taken.output[-3000:]

    # The repository holds the .env encrypted: no canary in clear anywhere under the backup folder.
    folder = restic.folder(cfg)
    # (The restic password's own 0600 file excepted: that is where it belongs.)
    assert ssh(sandbox, f"sudo stat -c %a {restic.password_file(cfg)}").stdout.strip() == "600"
    for secret in canaries:
        found = ssh(sandbox, f"sudo grep -rlF --exclude=restic-password -- '{secret}' {folder}", check=False)
        assert found.returncode == 1 and not found.stdout, f"a secret in clear under {folder}: {found.stdout}"
    assert not ssh(sandbox, f"sudo ls {folder}/staging", check=False).stdout.strip()

    # The volumes destroyed: an empty database and an empty Redis.
    project = cfg.stack.project_name
    subprocess.run(["docker", "compose", "-p", project, "down", "-v"], check=True, capture_output=True)

    restored = run(sandbox, "restore.py", "--data", "backup=latest")
    assert restored.code == 0, restored.output[-5000:]
    for secret in canaries:
        assert secret not in restored.output, "a secret of the stack shows in restore.py's output"
    assert state() == before
    assert "verified" in restored.output and "every service started and healthy" in restored.output
    mode = ssh(sandbox, f"sudo stat -c %a {cfg.paths.kitty_root}/{cfg.stack.env_file}").stdout.strip()
    assert mode == "600"

    # A repository with one file altered: refused, naming why; the host is unchanged.
    sql("INSERT INTO backup_probe VALUES (9999, 'after the backup')")
    changed = state()
    repo = restic.repository(cfg)
    pack = ssh(sandbox, f"sudo find {repo}/data -type f | head -n 1").stdout.strip()
    ssh(sandbox, f"printf X | sudo dd of={pack} bs=1 seek=100 conv=notrunc status=none")
    refused = run(sandbox, "restore.py", "--data", "backup=latest")
    assert refused.code != 0
    assert "restic check failed" in refused.output or "restore --verify" in refused.output, refused.output[-3000:]
    assert state() == changed
