"""stop.py on a real sandbox host: the manual's shutdown through systemd and compose, and the emergency stop.

Each test leaves the host converged again (deploy.py), as the next module expects.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox import converge as sandbox_converge
from sandbox.converge import SANDBOX
from tasks.inference import llamacpp
from tests.e2e.conftest import Converge, converge, sandbox_config, ssh, wait_healthy

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FOREIGN_CONTAINER = "kitty-e2e-foreign"


def stop(name: str, *args: str) -> Converge:
    """`pyinfra inventory.py stop.py` against the sandbox, as an admin laptop runs it."""
    env = {**os.environ, **sandbox_converge.sandbox_env(name), **sandbox_converge.QUIET_HF}
    command = [sys.executable, "-m", "pyinfra", "inventory.py", "stop.py", "-y", "--json"]
    command += ["--group-data", str(sandbox_converge.GROUP_DATA), *args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    try:
        results = __import__("json").loads(result.stdout) if result.stdout.strip() else None
    except ValueError:
        results = None
    return Converge(result.returncode, results, result.stdout + result.stderr)


def kitty_ports() -> dict[int, str]:
    cfg = sandbox_config()
    found = {srv.port: f"server {name}" for name, srv in cfg.enabled_servers().items()}
    found.update({s.port: f"stack {name}" for name, s in cfg.stack.services.items() if s.port})
    return found


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def containers() -> dict[str, tuple[str, str]]:
    """{service: (container id, state)} of the sandbox's compose project, on this machine's engine."""
    project = sandbox_config().stack.project_name
    out = subprocess.run(
        ["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={project}", "--format",
         '{{.ID}} {{.Label "com.docker.compose.service"}} {{.State}}'],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return {service: (cid, state) for cid, service, state in (line.split() for line in out.splitlines())}


def units_enabled(name: str) -> dict[str, str]:
    out = ssh(name, "systemctl is-enabled kitty-llama-q4.service kitty-llama-summary.service", check=False).stdout
    return dict(zip(["q4", "summary"], out.split(), strict=False))


def test_stop_frees_every_port_keeps_what_deploy_needs_and_a_second_stop_changes_nothing(sandbox, first_converge):
    before = containers()
    result = stop(sandbox)
    assert result.code == 0, result.output[-4000:]
    assert {"Model servers | server q4: stop and keep off at boot (kitty-llama-q4.service)",
            "Application stack | application stack: docker compose stop (containers and volumes kept)"} <= set(
        result.changed)  # fmt: skip
    held = [f"{port} ({what})" for port, what in kitty_ports().items() if listening(port)]
    assert held == []
    # The table at the end says what was done and what is left.
    assert "KITTY processes" in result.output and "none left" in result.output
    # Definitions stay, nothing starts at boot; containers and their volumes stay.
    assert ssh(sandbox, "test -f /etc/systemd/system/kitty-llama-q4.service").returncode == 0
    assert units_enabled(sandbox) == {"q4": "disabled", "summary": "disabled"}
    after = containers()
    assert {s: cid for s, (cid, _) in after.items()} == {s: cid for s, (cid, _) in before.items()}
    assert {state for _, state in after.values()} == {"exited"}

    again = stop(sandbox)
    assert again.code == 0 and again.changed == [], again.changed


def test_stopped_stays_stopped_across_a_reboot_then_deploy_starts_only_what_was_stopped(sandbox, first_converge):
    before = containers()
    assert stop(sandbox).code == 0
    subprocess.run([*SANDBOX, "restart", "--name", sandbox], check=True, capture_output=True)
    time.sleep(3)
    cfg = sandbox_config()
    assert [p for p in (s.port for s in cfg.enabled_servers().values()) if listening(p)] == []

    result = converge(sandbox)
    assert result.code == 0, result.output[-4000:]
    moved = [name for name in result.changed if "server " in name and ": " in name]
    assert sorted(moved) == [
        "Model servers | Wait for /health of the model servers: server q4, server summary",
        "Model servers | server q4: start (not running)",
        "Model servers | server summary: start (not running)",
    ]
    assert "Application stack | docker compose up" in result.changed
    # compose started the same containers: nothing was recreated.
    assert {s: cid for s, (cid, _) in containers().items()} == {s: cid for s, (cid, _) in before.items()}
    assert units_enabled(sandbox) == {"q4": "enabled", "summary": "enabled"}
    for server in cfg.enabled_servers().values():
        wait_healthy(server.port)


def test_emergency_stop_kills_only_kittys_own(sandbox, first_converge):
    cfg = sandbox_config()
    model = f"{cfg.paths.models_dir}/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf"
    foreign_port = cfg.servers["q4"].port + 60
    # A llama-server kitty-ops did not start: a copy of the binary, run by hand, on a port of its own.
    pid = ssh(
        sandbox,
        # `;` before the `&`: a backgrounded `a && b && c` is a subshell holding the SSH channel, and $! its PID.
        f"mkdir -p /tmp/foreign && cp {llamacpp.binary(cfg)} /tmp/foreign/llama-server || exit 1; "
        f"nohup /tmp/foreign/llama-server -m {model} --port {foreign_port} --host 127.0.0.1 -c 256 "
        "</dev/null >/tmp/foreign/log 2>&1 & echo $!",
    ).stdout.strip()
    subprocess.run(["docker", "rm", "-f", FOREIGN_CONTAINER], capture_output=True)
    subprocess.run(
        ["docker", "run", "-d", "--name", FOREIGN_CONTAINER, "kitty-fixture-base:bookworm", "sleep", "600"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        wait_healthy(foreign_port)
        result = stop(sandbox, "--data", "emergency=true")
        assert result.code == 0, result.output[-4000:]
        assert "Model servers | server q4: kill and keep off at boot (kitty-llama-q4.service)" in result.changed
        assert "emergency stop" in result.output
        assert [p for p in kitty_ports() if listening(p)] == []
        # The foreign ones live on.
        assert ssh(sandbox, f"kill -0 {pid}", check=False).returncode == 0
        wait_healthy(foreign_port, timeout=5)
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", FOREIGN_CONTAINER],
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        assert state == "true"
    finally:
        ssh(sandbox, f"kill {pid}", check=False)
        subprocess.run(["docker", "rm", "-f", FOREIGN_CONTAINER], capture_output=True)
    back = converge(sandbox)
    assert back.code == 0, back.output[-4000:]
