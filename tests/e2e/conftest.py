"""A brand-new sandbox host per test session, converged over SSH like a remote Mac.

Needs a Docker engine (`.ci/setup` starts one). The modules share one sandbox,
converged once (`first_converge`); each module changes what it tests and
converges back before it ends. Teardown removes the sandbox and its state
under .sandbox/<name>, and stops the model mirror if this session started it;
images stay as a build cache.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sandbox import converge as sandbox_converge
from tasks import config

# Servers and services of the e2e sandbox listen 100 ports above the main
# job's sandbox (sandbox/group_data/all.py): both can run side by side. Another
# name, SSH port and offset let two e2e sessions run at once on one machine.
NAME = os.environ.setdefault("KITTY_E2E_NAME", "kitty-e2e")
PORT = int(os.environ.setdefault("KITTY_E2E_SSH_PORT", "2223"))
os.environ.setdefault("KITTY_SANDBOX_PORT_OFFSET", "100")
ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config, items):
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return
    skip = pytest.mark.skip(reason="no Docker engine: run `bash .ci/setup` first")
    for item in items:
        if "e2e" not in item.keywords:
            continue
        if os.environ.get("CI"):
            # In CI a dead engine must not turn the e2e suite green: each test fails first thing, saying why.
            item.fixturenames.insert(0, "_no_docker_engine")
        else:
            item.add_marker(skip)


@pytest.fixture
def _no_docker_engine():
    pytest.fail("no Docker engine answers, and CI is set: the e2e tests must run (`bash .ci/setup`)")


def _mirror_running() -> bool:
    """The mirror on this session's port (18090 + the port offset) was started before it."""
    try:
        os.kill(int((sandbox_converge.hf_mirror_state() / "olah.pid").read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="session")
def sandbox():
    mirror_was_running = _mirror_running()
    sandbox_converge.ensure_sandbox(NAME, PORT, fresh=True)
    project = sandbox_config().stack.project_name
    yield NAME
    # The stack's containers run on this machine's engine: they outlive the sandbox.
    subprocess.run(["docker", "compose", "-p", project, "down", "-v"], check=False, capture_output=True)
    subprocess.run([*sandbox_converge.SANDBOX, "stop", "--name", NAME], check=False)
    if not mirror_was_running:
        sandbox_converge.stop_mirrors()


class Converge:
    """One converge of the sandbox: exit code, pyinfra's --json results, and what it printed."""

    def __init__(self, code: int, results: dict | None, output: str):
        self.code, self.results, self.output = code, results, output

    @property
    def operations(self) -> list[dict]:
        return (self.results or {}).get("results", {}).get("operations", []) if self.results else []

    @property
    def changed(self) -> list[str]:
        return [op["name"] for op in self.operations if op["success"]]

    @property
    def failed(self) -> list[str]:
        return [op["name"] for op in self.operations if op["error"]]


def converge(
    name: str,
    tmp_path: Path | None = None,
    *,
    overrides: dict | None = None,
    args=(),
    inventory: str = "inventory.py",
    env: dict | None = None,
) -> Converge:
    """Converge the sandbox; `overrides` replaces whole kitty_* sections (a group_data dir of its own);
    `inventory` another inventory file (several hosts), `env` more environment for pyinfra."""
    extra = []
    if overrides:
        folder = Path(tmp_path or ROOT / ".sandbox" / "overrides")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "all.py").write_text("".join(f"{key} = {value!r}\n" for key, value in overrides.items()))
        extra = ["--group-data", str(folder)]
    command = [
        sys.executable,
        "-m",
        "pyinfra",
        inventory,
        "deploy.py",
        "--group-data",
        str(sandbox_converge.GROUP_DATA),
        *extra,
        "-y",
        "--json",
        *args,
    ]
    env = {**os.environ, **sandbox_converge.sandbox_env(name), **sandbox_converge.QUIET_HF, **(env or {})}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    try:
        results = __import__("json").loads(result.stdout) if result.stdout.strip() else None
    except ValueError:
        results = None
    return Converge(result.returncode, results, result.stdout + result.stderr)


def sandbox_data() -> dict:
    """The sandbox's group data, as the deploy sees it (a deep copy to change in a test)."""
    return copy.deepcopy(config.read_group_data(ROOT / "group_data", sandbox_converge.GROUP_DATA))


def sandbox_config() -> config.KittyConfig:
    return config.load(sandbox_data())


def ssh(name: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command on the sandbox as admin (sudo where needed), over its own SSH."""
    ssh_config = ROOT / ".sandbox" / name / "ssh_config"
    result = subprocess.run(["ssh", "-F", str(ssh_config), name, command], capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"on {name}: {command!r} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result


def wait_healthy(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
            if last.status_code == 200:
                return
        except httpx.HTTPError as error:
            last = error
        time.sleep(1)
    raise AssertionError(f"127.0.0.1:{port}/health not ok after {timeout}s: {last}")


@pytest.fixture(scope="session")
def first_converge(sandbox) -> Converge:
    result = converge(sandbox)
    assert result.code == 0 and not result.failed, f"first converge failed: {result.failed}\n{result.output[-4000:]}"
    return result


def split_server(port: int, rpc_workers: list[str]) -> dict:
    """A server of the tiny model with every layer on the RPC workers: they compute, it only drives them."""
    return {
        "model": "smollm2-135m",
        "port": port,
        "alias": "kitty-split",
        "ctx_size": 512,
        "threads": 1,
        "parallel": 1,
        "n_gpu_layers": 99,
        "health_timeout": 120,
        "rpc_workers": rpc_workers,
    }
