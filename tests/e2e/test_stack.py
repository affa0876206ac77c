"""The application stack on a real sandbox host: the fixture app (sandbox/app-fixture) brought up by compose.

Runs its own compose project and ports (an extra group_data overlay), so it
neither meets the sandbox's default stack nor the model servers' ports, and
tears its project down at the end. KITTY_STACK_SANDBOX=name:port reuses a
sandbox that is already running (`sandbox/converge.py --name N --ssh-port P`)
instead of the session's fresh one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from sandbox import converge as sandbox_converge
from tasks import config
from tasks.config import read_group_data

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# 50 above this session's sandbox ports: clear of its own stack and of every other session's
# (port offsets are multiples of 100), so two e2e sessions can run this module at once.
OFFSET = int(os.environ["KITTY_SANDBOX_PORT_OFFSET"]) + 50
PROJECT = f"kitty-stack-e2e{OFFSET}"
PORTS = {"brain": 18000 + OFFSET, "redis": 16379 + OFFSET, "postgres": 15432 + OFFSET, "minio": 19000 + OFFSET}
MIRROR_SCRIPT = ROOT / "sandbox" / "app-fixture" / "make-app-mirror.sh"
# Values only this test knows: none of them may appear in pyinfra's output.
SECRETS = {
    "POSTGRES_PASSWORD": "pg-e2e-0f5c1d9a7b",
    "OPENAI_API_KEY": "sk-e2e-6a1f0c55d2e9",
    "MINIO_ROOT_USER": "minio-e2e-3c81",
    "MINIO_ROOT_PASSWORD": "minio-e2e-pw-7d24b9e0",
}
NEW_OPENAI_KEY = "sk-e2e-rotated-93be7714"


@pytest.fixture(scope="module")
def host_name(request):
    subprocess.run(["bash", str(MIRROR_SCRIPT)], check=True)
    saved = os.environ.get("OPENAI_API_KEY")
    reuse = os.environ.get("KITTY_STACK_SANDBOX")
    if reuse:
        name, _, port = reuse.partition(":")
        sandbox_converge.ensure_sandbox(name, int(port or 2240), fresh=False)
    else:
        name = request.getfixturevalue("sandbox")
    yield name
    subprocess.run(["docker", "compose", "-p", PROJECT, "down", "-v", "--remove-orphans"], capture_output=True)
    if saved is None:
        os.environ.pop("OPENAI_API_KEY", None)
    else:
        os.environ["OPENAI_API_KEY"] = saved


def overlay(tmp: Path, *, offline: str = "true", openai_key: str = SECRETS["OPENAI_API_KEY"]) -> Path:
    """A group_data folder on top of sandbox/group_data: this test's project, ports, env and secrets file."""
    stack = read_group_data(ROOT / "group_data", ROOT / "sandbox" / "group_data")["kitty_stack"]
    stack = json.loads(json.dumps(stack))
    stack["project_name"] = PROJECT
    for name, port in PORTS.items():
        if name in stack["services"]:
            stack["services"][name]["port"] = port
    stack["env"]["OFFLINE_MODE"] = offline
    secrets = tmp / "secrets.env"
    # Every secret but OPENAI_API_KEY from the secrets file; that one from the environment.
    secrets.write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items() if k != "OPENAI_API_KEY"))
    secrets.chmod(0o600)
    stack["secrets_file"] = str(secrets)
    folder = tmp / "group_data"
    folder.mkdir(exist_ok=True)
    (folder / "all.py").write_text(f"kitty_stack = {stack!r}\n")
    # The other secret from the operator's environment, as an admin laptop would pass it.
    os.environ["OPENAI_API_KEY"] = openai_key
    return folder


def deploy(name: str, folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **sandbox_converge.sandbox_env(name), **sandbox_converge.QUIET_HF}
    command = [sys.executable, "-m", "pyinfra", "inventory.py", "deploy.py", "-y"]
    command += ["--group-data", str(sandbox_converge.GROUP_DATA), "--group-data", str(folder), *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)


def json_results(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, f"converge failed:\n{result.stderr[-4000:]}"
    return json.loads(result.stdout)


def changed(results: dict) -> list[str]:
    return [op["name"] for op in results["results"]["operations"] if op["success"]]


def containers() -> dict[str, str]:
    """service -> container id, from the engine the sandbox drives."""
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}", "--format",
         '{{.Label "com.docker.compose.service"}} {{.ID}} {{.State}}'],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = {}
    for line in out.splitlines():
        service, container_id, state = line.split()
        assert state == "running", f"{service} is {state}"
        found[service] = container_id
    return found


def brain_health() -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['brain']}/health", timeout=5) as reply:
        return json.load(reply)


def ssh(name: str, command: str) -> str:
    config = ROOT / ".sandbox" / name / "ssh_config"
    return subprocess.run(["ssh", "-F", str(config), name, command], capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def first(host_name, tmp_path_factory):
    folder = overlay(tmp_path_factory.mktemp("stack"))
    results = json_results(deploy(host_name, folder, "--json"))
    return folder, results


def test_first_converge_brings_the_fixture_stack_up_healthy(first):
    _, results = first
    assert "Application stack | docker compose up" in changed(results)
    assert set(containers()) == {"brain", "redis", "postgres", "minio"}
    health = brain_health()
    # Every dependency reached: the brain runs on the host's network (host_network), where the
    # Q4 server listens on loopback, and finds Redis and Postgres at their loopback ports.
    assert health["status"] == "ok", health
    assert health["dependencies"]["redis"]["ok"] and health["dependencies"]["postgres"]["ok"]
    q4_port = config.load(read_group_data(ROOT / "group_data", sandbox_converge.GROUP_DATA)).servers["q4"].port
    assert health["dependencies"]["llamacpp_q4"] == {"ok": True, "url": f"http://127.0.0.1:{q4_port}", "status": "ok"}
    assert health["offline_mode"] is True
    assert health["secrets_present"] == ["OPENAI_API_KEY"]


def test_env_file_is_private_to_the_admin(host_name, first):
    assert ssh(host_name, "stat -c '%a %U' /srv/kitty/KITT/.env") == "600 admin"


def test_second_converge_recreates_nothing(host_name, first):
    folder, _ = first
    before = containers()
    result = deploy(host_name, folder, "--json")
    # compose_up logs why it runs: the failure says which service drifted.
    why = [line for line in result.stderr.splitlines() if "compose up:" in line]
    assert changed(json_results(result)) == [], why
    assert containers() == before


def test_one_changed_value_recreates_only_the_services_that_use_it(host_name, first, tmp_path):
    folder, _ = first
    before = containers()
    results = json_results(deploy(host_name, overlay(tmp_path, offline="false"), "--json"))
    assert "Application stack | docker compose up" in changed(results)
    after = containers()
    assert after["redis"] == before["redis"] and after["postgres"] == before["postgres"]
    assert after["brain"] != before["brain"]
    assert brain_health()["offline_mode"] is False
    # Back as it was, for the tests after this one.
    json_results(deploy(host_name, folder, "--json"))


def test_no_secret_shows_in_the_most_verbose_output_with_diffs(host_name, first, tmp_path):
    folder = overlay(tmp_path, openai_key=NEW_OPENAI_KEY)
    result = deploy(host_name, folder, "-vvv", "--diff")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    # The secret did change, so the .env was rewritten in this very run.
    assert "Write .env (mode 0600, contents never shown)" in output
    assert "contents not shown" in output
    for value in [*SECRETS.values(), NEW_OPENAI_KEY]:
        assert value not in output
    assert (
        NEW_OPENAI_KEY.encode()
        not in subprocess.run(["docker", "inspect", containers()["redis"]], capture_output=True).stdout
    )
