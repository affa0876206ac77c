"""restore.py's Redis step (templates/backup-restore.sh) against a real Redis, AOF on and off.

A Redis with AOF on loads its AOF at start and ignores an RDB put beside it (with no AOF
at all it starts empty): replacing the RDB alone would restore nothing. Here the fixture's
Redis image runs in a compose project of this test's own; keys are saved to an RDB, the
data is changed, the script puts the RDB back; the keys must be those of the RDB, and
still be after a restart (served from the AOF the restore rebuilt).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tasks.runbook import restic

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "templates" / "backup-restore.sh"
REDIS_IMAGE = ROOT / "sandbox" / "app-fixture" / "repo" / "infra" / "images" / "redis"

COMPOSE = """\
services:
  redis:
    build:
      context: {context}
      args: {{BASE_IMAGE: "kitty-fixture-base:bookworm"}}
    image: kitty-fixture/redis:1
    command: ["redis-server", "--dir", "/data", "--appendonly", "{appendonly}", "--save", "60 1"]
    volumes: ["data:/data"]
    healthcheck:
      test: ["CMD", "redis-cli", "ping"]
      interval: 1s
      timeout: 3s
      retries: 30
volumes:
  data:
"""


@pytest.fixture(scope="module", autouse=True)
def base_image():
    # The fixture's base image (the sandbox's Debian under a stable name): there is no registry.
    subprocess.run(["bash", str(ROOT / "sandbox" / "app-fixture" / "make-app-mirror.sh")], check=True)


@pytest.fixture(params=["yes", "no"], ids=["aof-on", "aof-off"])
def project(request, tmp_path):
    name = f"kitty-aof-test-{os.getpid()}-{request.param}"
    compose_file = tmp_path / "compose.yml"
    compose_file.write_text(COMPOSE.format(context=REDIS_IMAGE, appendonly=request.param))
    command = f"docker compose -p {name} -f {compose_file}"
    subprocess.run([*command.split(), "up", "-d", "--wait"], check=True, capture_output=True, timeout=600)
    yield command, request.param
    subprocess.run([*command.split(), "down", "-v"], check=False, capture_output=True, timeout=120)


def cli(compose: str, *args: str) -> str:
    out = subprocess.run([*compose.split(), "exec", "-T", "redis", "redis-cli", *args], capture_output=True, text=True)
    return out.stdout.strip()


def keys(compose: str) -> dict[str, str]:
    names = sorted(cli(compose, "KEYS", "*").split())
    return {name: cli(compose, "GET", name) for name in names}


def test_the_restored_rdb_is_what_redis_serves_and_keeps(project, tmp_path):
    compose, appendonly = project
    assert cli(compose, "CONFIG", "GET", "appendonly").split()[1] == appendonly
    for i in range(20):
        cli(compose, "SET", f"probe:{i}", f"value-{i}")
    cli(compose, "SAVE")
    parts = tmp_path / "work" / "parts"
    parts.mkdir(parents=True)
    rdb = subprocess.run([*compose.split(), "exec", "-T", "redis", "cat", "/data/dump.rdb"], capture_output=True)
    (parts / "redis.rdb").write_bytes(rdb.stdout)
    saved = keys(compose)
    assert len(saved) == 20
    # What the restore must undo: the AOF (and memory) now hold other data.
    cli(compose, "FLUSHALL")
    cli(compose, "SET", "after:backup", "x")

    env = {
        "PATH": os.environ["PATH"],
        "WORK": str(tmp_path / "work"),
        "COMPOSE": compose,
        "PG_SERVICE": "",
        "REDIS_SERVICE": "redis",
        "WRITERS": "",
        "ENV_FILE": str(tmp_path / "no.env"),
        "ENV_OWNER": "root",
        "TIMEOUT": "60",
    }
    run = subprocess.run(
        ["sh", "-s"], input=restic.script(SCRIPT.name), env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert keys(compose) == saved
    assert ("AOF rebuilt from it" in run.stdout) == (appendonly == "yes"), run.stdout[-2000:]

    # After a restart Redis loads its AOF (on) or the RDB (off): the restored keys either way.
    subprocess.run([*compose.split(), "restart", "redis"], check=True, capture_output=True, timeout=120)
    deadline = time.monotonic() + 60
    while cli(compose, "PING") != "PONG" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert keys(compose) == saved
    assert cli(compose, "CONFIG", "GET", "appendonly").split()[1] == appendonly
