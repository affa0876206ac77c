"""llama.cpp on the sandbox host for real: pinned build, side-by-side upgrade, failed build keeps the old one."""

import pytest

from tests.e2e.conftest import converge, sandbox_config, sandbox_data, ssh, wait_healthy

pytestmark = pytest.mark.e2e
ROOT = "/opt/kitty/llama.cpp"


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


def test_the_pinned_build_runs(sandbox, first_converge):
    assert "build 11434, commit df1938a" in version(sandbox)
    assert current_build(sandbox).startswith("b11434-cpu-")


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


def test_rolling_back_to_the_pinned_ref_reuses_its_build(sandbox, first_converge):
    result = converge(sandbox)
    assert result.code == 0, result.output[-3000:]
    assert not [name for name in result.changed if name.startswith("llama.cpp | Build")]
    assert any(name.startswith("llama.cpp | Point current at b11434-cpu-") for name in result.changed)
    assert "commit df1938a" in version(sandbox)
    for server in sandbox_config().enabled_servers().values():
        wait_healthy(server.port)
