"""llama.cpp RPC workers planned for simulated Linux and Mac hosts: the build, the worker program, --rpc, the order."""

import pytest
from pyinfra.context import ctx_host

from tasks import config
from tasks.config import placement, rpc_placement
from tasks.inference import llamacpp, servers
from tests.plan import hosts
from tests.plan.harness import HOST, group_data, plan, prepared, simulated_platform

HOSTS = {"linux": hosts.linux_converged, "macos": hosts.macos_converged}
DEFINITION = {
    "linux": "/etc/systemd/system/kitty-rpc-server.service",
    "macos": "/Library/LaunchDaemons/com.kitty.rpc-server.plist",
}


def with_worker(worker=None, split="summary") -> dict:
    """This host runs an rpc-server, and server `split` uses it (the host's own, on loopback)."""
    servers_data = {name: dict(srv) for name, srv in group_data()["kitty_servers"].items()}
    if split:
        servers_data[split]["rpc_workers"] = [HOST]
    return {"kitty_servers": servers_data, "kitty_rpc_worker": worker if worker is not None else {"port": 50052}}


@pytest.mark.parametrize("os", ["linux", "macos"])
def test_a_worker_host_builds_rpc_and_starts_its_worker_before_the_servers(os):
    planned = plan(HOSTS[os](), data=with_worker())
    names = [op.name for op in planned.ops]
    (build,) = [op for op in planned.ops if op.name.startswith("Build llama.cpp")]
    assert "llama-server,ggml-rpc-server" in build.commands[0] and "-DGGML_RPC=ON" in build.commands[0]
    install = planned.op("rpc worker: install (new)")
    assert any(DEFINITION[os] in command for command in install.commands)
    wait = names.index("Wait for the rpc-server: rpc worker")
    assert "telnet://127.0.0.1:50052" in planned.op("Wait for the rpc-server: rpc worker").commands[0]
    assert (
        wait
        < names.index("What server summary's rpc workers run")
        < names.index("server summary: reload (its definition changed)")
    )
    # The worker is waited for before any server restarts on the new build.
    assert wait < min(i for i, name in enumerate(names) if name.startswith("server "))


@pytest.mark.parametrize("os", ["linux", "macos"])
def test_the_split_server_gets_rpc_and_the_workers_record_as_an_input(os):
    with prepared(HOSTS[os](), data=with_worker()) as (_state, host, _calls):
        with ctx_host.use(host):
            cfg = rpc_placement.placed(placement.host_config(host), host)
    plat = simulated_platform(os, "admin", "arm64" if os == "macos" else "x86_64")
    build = llamacpp.wanted_build(cfg, plat).id
    prog = servers.program(cfg, plat, "summary", cfg.servers["summary"], build)
    assert prog.argv[prog.argv.index("--rpc") + 1] == "127.0.0.1:50052"
    assert [item.name for item in prog.inputs][-1] == "rpc workers"
    q4 = servers.program(cfg, plat, "q4", cfg.servers["q4"], build)
    assert "--rpc" not in q4.argv and "rpc workers" not in [item.name for item in q4.inputs]


@pytest.mark.parametrize("os", ["linux", "macos"])
def test_a_host_without_a_worker_plans_nothing_for_rpc(os):
    planned = plan(HOSTS[os]())
    assert not [op.name for op in planned.ops if "rpc" in op.name.lower()]
    assert not [op.name for op in planned.ops if op.name.startswith("Build llama.cpp")]


def test_a_worker_only_host_builds_rpc_and_runs_no_split_server():
    planned = plan(HOSTS["linux"](), data=with_worker(split=None))
    assert "rpc worker: install (new)" in [op.name for op in planned.ops]
    assert not [op.name for op in planned.ops if op.name.startswith("What server")]


def test_a_bad_worker_fails_before_any_operation_naming_the_field():
    data = with_worker({"host": "0.0.0.0"})
    with pytest.raises(config.ConfigError, match="kitty_rpc_worker.host: '0.0.0.0' is beyond loopback"):
        plan(HOSTS["linux"](), data=data)
