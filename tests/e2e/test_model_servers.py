"""Model servers on the sandbox host for real: systemd, health-gated, restarted only when something changed."""

import subprocess
import time

import httpx
import pytest

from sandbox.converge import SANDBOX
from tests.e2e.conftest import converge, sandbox_config, sandbox_data, ssh, wait_healthy

pytestmark = pytest.mark.e2e


def pids(name: str) -> dict[str, str]:
    return {
        server: ssh(name, f"systemctl show -p MainPID --value kitty-llama-{server}.service").stdout.strip()
        for server in sandbox_config().servers
    }


def port(server: str) -> int:
    return sandbox_config().servers[server].port


def servers_with(**changes) -> dict:
    servers = sandbox_data()["kitty_servers"]
    for path, value in changes.items():
        server, field = path.split("__")
        servers[server][field] = value
    return {"kitty_servers": servers}


def test_servers_answer_a_chat_completion(sandbox, first_converge):
    reply = httpx.post(
        f"http://127.0.0.1:{port('q4')}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8, "temperature": 0},
        timeout=60,
    )
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
    assert reply.json()["model"] == "kitty-q4"


def test_an_unchanged_converge_restarts_nothing(sandbox, first_converge):
    before = pids(sandbox)
    result = converge(sandbox)
    assert result.code == 0 and result.changed == []
    assert pids(sandbox) == before


def test_one_changed_flag_restarts_that_server_alone(sandbox, first_converge, tmp_path):
    before = pids(sandbox)
    result = converge(sandbox, tmp_path, overrides=servers_with(summary__ctx_size=512))
    assert result.code == 0, result.output[-3000:]
    after = pids(sandbox)
    assert after["q4"] == before["q4"] and after["summary"] != before["summary"]
    assert "--ctx-size 512" in ssh(sandbox, "ps -o args= -p " + after["summary"]).stdout
    assert "[health] server summary: healthy" in result.output and "[health] server q4" not in result.output


def test_disabling_a_server_removes_its_unit_and_frees_its_port(sandbox, first_converge, tmp_path):
    result = converge(sandbox, tmp_path, overrides=servers_with(summary__enabled=False))
    assert result.code == 0, result.output[-3000:]
    assert ssh(sandbox, "test -e /etc/systemd/system/kitty-llama-summary.service", check=False).returncode != 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port('summary')}/health", timeout=2)
    wait_healthy(port("q4"), timeout=10)
    # And back as configured.
    assert converge(sandbox).code == 0
    wait_healthy(port("summary"))


def test_a_killed_server_comes_back_by_itself(sandbox, first_converge):
    pid = pids(sandbox)["q4"]
    ssh(sandbox, f"sudo kill -9 {pid}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and pids(sandbox)["q4"] in (pid, "0"):
        time.sleep(1)
    assert pids(sandbox)["q4"] not in (pid, "0")
    wait_healthy(port("q4"))


def test_servers_come_back_after_a_reboot(sandbox, first_converge):
    subprocess.run([*SANDBOX, "restart", "--name", sandbox], check=True, capture_output=True)
    for server in sandbox_config().enabled_servers().values():
        wait_healthy(server.port, timeout=120)


def test_a_port_held_by_a_foreign_process_is_an_error_and_the_process_survives(sandbox, first_converge, tmp_path):
    foreign_port = port("q4") + 50
    started = ssh(
        sandbox,
        f"nohup python3 -m http.server {foreign_port} --bind 127.0.0.1 >/dev/null 2>&1 & echo $!",
    ).stdout.strip()
    try:
        # Listening before the converge looks: the port check must find it, not race it.
        ssh(
            sandbox,
            f"i=0; until curl -s -o /dev/null http://127.0.0.1:{foreign_port}/ || [ $i -ge 50 ]; "
            "do i=$((i+1)); sleep 0.2; done",
        )
        servers = sandbox_data()["kitty_servers"]
        servers["extra"] = {**servers["summary"], "port": foreign_port, "alias": "kitty-extra"}
        result = converge(sandbox, tmp_path, overrides={"kitty_servers": servers})
        assert result.code != 0
        assert f"port {foreign_port} of model server 'extra' is held by another process: PID {started} (python3)" in (
            result.output
        )
        assert ssh(sandbox, f"kill -0 {started}", check=False).returncode == 0
    finally:
        ssh(sandbox, f"kill {started}", check=False)


def test_a_cpu_build_asked_for_gpu_layers_is_reported_on_cpu_and_fails(sandbox, first_converge, tmp_path):
    """Issue 25: the sandbox's build is for the CPU; asked for 99 GPU layers a server serves, healthy,
    from the CPU: the health wait and the health table say so, and the converge fails with the remedy.
    (The sandbox's own servers ask for 0 layers: they are not checked, and log at the default verbosity.)"""
    result = converge(sandbox, tmp_path, overrides=servers_with(summary__n_gpu_layers=99))
    assert result.code != 0
    assert "[health] server summary: DEGRADED, on CPU (asked for 99 GPU layers)" in result.output, result.output[-3000:]
    assert "server summary: degraded: on CPU (asked for 99 GPU layers)." in result.output
    assert "kitty_llamacpp.backend: cpu" in result.output
    # It serves (from the CPU): nothing was rolled back, and it answers.
    assert "Rolled back" not in result.output
    args = ssh(sandbox, "ps -o args= -C llama-server").stdout
    assert "--n-gpu-layers 99 " in args and "--log-verbosity 4" in args
    back = converge(sandbox, tmp_path, overrides=servers_with(summary__n_gpu_layers=0))
    assert back.code == 0, back.output[-3000:]
    assert converge(sandbox).changed == []
