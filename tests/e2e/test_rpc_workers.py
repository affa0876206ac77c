"""llama.cpp RPC on one sandbox host for real: an rpc-server on loopback and a model server that uses it.

The two-host case (a worker on another host's address) is tests/e2e's two-host test;
here the worker and its main server share the host, which proves the build
(GGML_RPC=ON, the ggml-rpc-server target), the supervised worker, the ordering
(worker healthy before the server starts) and `--rpc`, with a real completion
computed on the worker's device.
"""

import os

import httpx
import pytest

from sandbox import converge as sandbox_converge
from tests.e2e.conftest import converge, sandbox_data, split_server, ssh, wait_healthy

pytestmark = pytest.mark.e2e

OFFSET = int(os.environ["KITTY_SANDBOX_PORT_OFFSET"])
WORKER_PORT = 50052 + OFFSET
SPLIT_PORT = 8087 + OFFSET
UNIT = "kitty-rpc-server.service"


def host_name(sandbox: str) -> str:
    """The sandbox's name in the inventory (inventory.py: the host part of user@host:port)."""
    spec = sandbox_converge.sandbox_env(sandbox)["KITTY_HOSTS"].split(",")[0]
    return spec.rpartition("@")[2].partition(":")[0]


def with_worker(sandbox: str) -> dict:
    data = sandbox_data()
    servers = dict(data["kitty_servers"])
    servers["split"] = split_server(SPLIT_PORT, [host_name(sandbox)])
    return {"kitty_servers": servers, "kitty_rpc_worker": {"port": WORKER_PORT, "threads": 1}}


@pytest.fixture(scope="module")
def split(sandbox, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rpc")
    result = converge(sandbox, folder, overrides=with_worker(sandbox))
    yield folder, result
    # Back to the sandbox's own data: worker and split server removed, the plain build current again.
    back = converge(sandbox)
    assert back.code == 0, back.output[-3000:]


def test_a_split_server_answers_through_its_rpc_worker(sandbox, split):
    _, result = split
    assert result.code == 0, result.output[-4000:]
    changed = result.changed
    assert "llama.cpp | Build llama.cpp b11434 (cpu)" in changed
    assert "RPC workers | rpc worker: install (new)" in changed
    assert "RPC workers | Wait for the rpc-server: rpc worker" in changed
    # The worker was waited for before the server that uses it was even installed.
    assert changed.index("RPC workers | Wait for the rpc-server: rpc worker") < changed.index(
        "Model servers | server split: install (new)"
    )
    assert ssh(sandbox, "ls /opt/kitty/llama.cpp/current/bin/").stdout.split() == ["ggml-rpc-server", "llama-server"]
    assert ssh(sandbox, f"systemctl is-active {UNIT}").stdout.strip() == "active"
    argv = ssh(sandbox, "systemctl show -p ExecStart --value kitty-llama-split.service").stdout
    assert f"--rpc 127.0.0.1:{WORKER_PORT}" in argv
    wait_healthy(SPLIT_PORT)
    reply = httpx.post(
        f"http://127.0.0.1:{SPLIT_PORT}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "temperature": 0},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"].strip()
    # The model's tensors went to the worker: the main server is its client.
    log = ssh(sandbox, "cat /srv/kitty/KITT/.logs/rpc-server.log").stdout
    assert "Starting RPC server" in log and "Accepted client connection" in log
    assert f"endpoint       : 127.0.0.1:{WORKER_PORT}" in log
    table = [line for line in result.output.splitlines() if "rpc worker" in line and "healthy" in line]
    assert table, "no health-table row for the rpc worker"


def test_a_second_converge_changes_nothing(sandbox, split):
    folder, first = split
    assert first.code == 0
    result = converge(sandbox, folder, overrides=with_worker(sandbox))
    assert result.code == 0, result.output[-3000:]
    assert result.changed == []


def test_a_changed_worker_restarts_it_and_its_server_once(sandbox, split):
    folder, first = split
    assert first.code == 0
    pid = ssh(sandbox, "systemctl show -p MainPID --value kitty-llama-split.service").stdout.strip()
    data = with_worker(sandbox)
    data["kitty_rpc_worker"]["threads"] = 2
    result = converge(sandbox, folder, overrides=data)
    assert result.code == 0, result.output[-3000:]
    assert "RPC workers | rpc worker: reload (its definition changed)" in result.changed
    assert "Model servers | server split: restart (rpc workers changed)" in result.changed
    assert not [name for name in result.changed if name.startswith(("Model servers | server q4", "llama.cpp"))]
    assert ssh(sandbox, "systemctl show -p MainPID --value kitty-llama-split.service").stdout.strip() != pid
    wait_healthy(SPLIT_PORT)
    reply = httpx.post(
        f"http://127.0.0.1:{SPLIT_PORT}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4, "temperature": 0},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
