"""llama.cpp on the sandbox host for real: pinned build, side-by-side upgrade, failed build keeps the old one,
and a build that compiles but cannot compute is refused before any server runs on it (on a converged host
and on a first install)."""

import json
import os
import subprocess
import time

import pytest

from sandbox import converge as sandbox_converge
from tests.e2e.conftest import NAME, PORT, converge, sandbox_config, sandbox_data, ssh, wait_healthy

pytestmark = pytest.mark.e2e
ROOT = "/opt/kitty/llama.cpp"
# The mirror's tag whose llama-server loads a model, answers /health, then aborts on its first completion.
CRASH = "crash"


def current_build(name: str) -> str:
    return ssh(name, f"readlink {ROOT}/current").stdout.strip().rsplit("/", 1)[-1]


def version(name: str) -> str:
    return ssh(name, f"{ROOT}/current/bin/llama-server --version 2>&1").stdout


def with_ref(ref: str) -> dict:
    data = sandbox_data()
    return {"kitty_llamacpp": {**data["kitty_llamacpp"], "ref": ref}}


def server_pids(name: str) -> dict[str, str]:
    units = {n: f"kitty-llama-{n}.service" for n in sandbox_config().enabled_servers()}
    return {n: ssh(name, f"systemctl show -p MainPID --value {u}").stdout.strip() for n, u in units.items()}


def servers_as_started(name: str) -> dict[str, str]:
    """Per server: its unit file's hash, and the invocation and PID systemd started it with."""
    found = {}
    for server in sandbox_config().enabled_servers():
        unit = f"kitty-llama-{server}.service"
        found[server] = ssh(
            name,
            f"sha256sum /etc/systemd/system/{unit} && systemctl show -p InvocationID -p MainPID -p NRestarts {unit}",
        ).stdout
    return found


def failed_at(result) -> str:
    """The operation a failed run stopped at: the last one it started (pyinfra's JSON leaves it out)."""
    assert result.code != 0, result.output[-3000:]
    started = [line.partition("Starting operation: ")[2].strip() for line in result.output.splitlines()]
    return [name for name in started if name][-1]


def test_the_pinned_build_runs(sandbox, first_converge):
    assert "build 11434, commit df1938a" in version(sandbox)
    assert current_build(sandbox).startswith("b11434-cpu-")
    # It proved itself on the tiny model before the servers first started on it.
    proof = json.loads(ssh(sandbox, f"cat {ROOT}/current/smoke.json").stdout)
    assert proof["model"] == "kitty-smoke-v1.gguf" and proof["tokens"] == 8 and proof["offloaded"] == "cpu"
    assert "llama.cpp | Prove llama.cpp b11434 computes on this host" in first_converge.changed


def test_a_converged_host_plans_no_llama_cpp_work(sandbox, first_converge):
    result = converge(sandbox, args=["--dry"])
    assert result.code == 0
    planned = [op["name"] for op in result.results["plan"] if op["hosts_with_change"]]
    assert not [name for name in planned if name.startswith("llama.cpp")]


def test_a_new_ref_builds_beside_the_old_one_and_restarts_servers(sandbox, first_converge, tmp_path):
    old = current_build(sandbox)
    pids = server_pids(sandbox)
    result = converge(sandbox, tmp_path, overrides=with_ref("b11434-kitty1"))
    assert result.code == 0, result.output[-3000:]
    assert "llama.cpp | Build llama.cpp b11434-kitty1 (cpu)" in result.changed
    new = current_build(sandbox)
    assert new != old and new.startswith("b11434-kitty1-cpu-")
    assert "commit cdc6aed" in version(sandbox)
    # The old build stays for rollback.
    assert ssh(sandbox, f"test -x {ROOT}/builds/{old}/bin/llama-server", check=False).returncode == 0
    after = server_pids(sandbox)
    assert all(after[n] != pids[n] for n in pids), (pids, after)
    for server in sandbox_config().enabled_servers().values():
        wait_healthy(server.port)


def test_a_failed_build_keeps_current_and_names_the_step(sandbox, first_converge, tmp_path):
    before = current_build(sandbox)
    result = converge(sandbox, tmp_path, overrides=with_ref("broken"))
    assert result.code != 0
    assert "FAILED during: compile llama-server" in result.output
    assert "kitty-ops test mirror" in result.output  # the #error line, from the log tail
    assert current_build(sandbox) == before
    assert ssh(sandbox, f"ls {ROOT}/builds", check=False).stdout.count("broken") == 0
    for server in sandbox_config().enabled_servers().values():
        wait_healthy(server.port, timeout=30)


def test_a_build_that_cannot_compute_never_becomes_current(sandbox, first_converge, tmp_path):
    before, servers = current_build(sandbox), servers_as_started(sandbox)
    started = time.monotonic()
    result = converge(sandbox, tmp_path, overrides=with_ref(CRASH))
    took = time.monotonic() - started
    assert failed_at(result) == "llama.cpp | Prove llama.cpp crash computes on this host", result.output[-3000:]
    assert "REFUSED: this build does not compute on this host" in result.output
    assert "llama-server ended during its first completion: signal SIGABRT (exit 134)" in result.output
    assert "likely cause: llama.cpp aborted" in result.output
    # Nothing moved: `current`, every unit, every server process; no restart, so no rollback either.
    assert current_build(sandbox) == before
    assert servers_as_started(sandbox) == servers
    assert "Rolled back" not in result.output and "[health]" not in result.output
    crashed = [line for line in ssh(sandbox, f"ls {ROOT}/builds").stdout.split() if line.startswith(f"{CRASH}-")]
    assert len(crashed) == 1 and ssh(sandbox, f"test -f {ROOT}/builds/{crashed[0]}/smoke.json", check=False).returncode
    for server in sandbox_config().enabled_servers().values():
        wait_healthy(server.port, timeout=30)

    # Converged again: the refused build is proven again (seconds), never compiled again, never current.
    again = converge(sandbox, tmp_path, overrides=with_ref(CRASH))
    assert failed_at(again) == "llama.cpp | Prove llama.cpp crash computes on this host"
    assert "Starting operation: llama.cpp | Build llama.cpp" not in again.output
    assert current_build(sandbox) == before and servers_as_started(sandbox) == servers
    print(f"refused in {took:.1f} s with the compile; {again.output.count('REFUSED')} refusal when converged again")


@pytest.fixture
def fresh_host(sandbox, tmp_path):
    """A second, brand-new sandbox host (this machine's network, its own SSH port) and an inventory
    naming it as an inference host only: no application role, nothing but llama.cpp and the servers."""
    name, port = f"{NAME}-first", PORT + 50
    # Its servers' ports 50 above the session sandbox's (both share this machine's network).
    offset = int(os.environ["KITTY_SANDBOX_PORT_OFFSET"]) + 50
    sandbox_converge.ensure_sandbox(name, port, fresh=True)
    env = sandbox_converge.sandbox_env(name)
    inventory = tmp_path / "inventory.py"
    host = {
        "ssh_user": "admin",
        "ssh_port": port,
        "ssh_key": env["KITTY_SSH_KEY"],
        "ssh_known_hosts_file": env["KITTY_SSH_KNOWN_HOSTS"],
        "ssh_strict_host_key_checking": "yes",
    }
    inventory.write_text(f"inference = [('127.0.0.1', {host!r})]\napplication = []\n")
    yield name, str(inventory), {"KITTY_SANDBOX_PORT_OFFSET": str(offset)}
    subprocess.run([*sandbox_converge.SANDBOX, "stop", "--name", name], check=False)


def test_a_first_install_never_starts_a_server_on_a_build_that_cannot_compute(fresh_host, tmp_path):
    name, inventory, env = fresh_host
    result = converge(name, tmp_path, overrides=with_ref(CRASH), inventory=inventory, env=env)
    assert failed_at(result) == "llama.cpp | Prove llama.cpp crash computes on this host", result.output[-3000:]
    assert "REFUSED: this build does not compute on this host" in result.output
    assert "likely cause: llama.cpp aborted" in result.output
    assert ssh(name, f"test -e {ROOT}/current", check=False).returncode != 0
    # No server unit was ever written, let alone started.
    units = ssh(name, "systemctl list-units --all --plain --no-legend 'kitty-llama-*'", check=False).stdout
    assert units.strip() == "", units
    assert ssh(name, "ls /etc/systemd/system/ | grep -c kitty-llama", check=False).stdout.strip() == "0"


def test_rolling_back_to_the_pinned_ref_reuses_its_build(sandbox, first_converge):
    result = converge(sandbox)
    assert result.code == 0, result.output[-3000:]
    assert not [name for name in result.changed if name.startswith("llama.cpp | Build")]
    assert any(name.startswith("llama.cpp | Point current at b11434-cpu-") for name in result.changed)
    assert "commit df1938a" in version(sandbox)
    for server in sandbox_config().enabled_servers().values():
        wait_healthy(server.port)
