"""llama.cpp RPC workers: the schema, resolving them over the inventory, --rpc, the build, the budget, the wait."""

import socket
import threading
import time

import pytest

from tasks import config
from tasks.config import ConfigError, RpcUse, placement, rpc_placement
from tasks.config.placement import HostView
from tasks.inference import llamacpp, rpc_workers, server_args
from tasks.system import memory_budget
from tests.plan.harness import simulated_platform
from tests.unit.data import host_data
from tests.unit.test_host_scripts import SHELLS, WAIT, needs_shells, run, server_log, userland  # noqa: F401

LINUX = simulated_platform("linux", "admin", "x86_64")


def load(worker=None, **servers):
    """The defaults with `servers` = {name: {field: value}} changes and this host's kitty_rpc_worker."""
    data = host_data()
    for name, changes in servers.items():
        data["kitty_servers"][name].update(changes)
    if worker is not None:
        data["kitty_rpc_worker"] = worker
    return config.load(data)


def error_of(worker=None, **servers) -> str:
    with pytest.raises(ConfigError) as raised:
        load(worker, **servers)
    return str(raised.value)


# --- the schema ---------------------------------------------------------------------------


def test_a_worker_binds_loopback_by_default():
    worker = load({}).rpc_worker
    assert (worker.host, worker.port, worker.cache) == ("127.0.0.1", 50052, False)


def test_a_worker_beyond_loopback_is_refused_unless_allowed_saying_why():
    message = error_of({"host": "10.0.0.2"})
    assert "kitty_rpc_worker.host: '10.0.0.2' is beyond loopback, and rpc-server has no authentication" in message
    assert "allow_beyond_loopback: true" in message
    assert load({"host": "10.0.0.2", "allow_beyond_loopback": True}).rpc_worker.host == "10.0.0.2"


def test_a_worker_port_may_not_be_a_server_port():
    assert "kitty_rpc_worker.port: port 8083 is already used by kitty_servers.q4.port" in error_of({"port": 8083})


def test_a_worker_setting_with_a_typo_fails_by_name():
    assert "kitty_rpc_worker.thread: unknown setting" in error_of({"thread": 4})


def test_rpc_in_extra_args_is_refused_for_the_field():
    assert "'--rpc' is set by the field 'rpc_workers'" in error_of(q4={"extra_args": ["--rpc", "10.0.0.2:50052"]})


# --- --rpc on the server's command line ----------------------------------------------------


def test_a_server_with_workers_gets_their_resolved_endpoints():
    cfg = load(q4={"rpc_workers": ["studio2.local", "studio3.local"]})
    cfg = cfg.model_copy(update={"rpc": {"q4": RpcUse(endpoints=["10.0.0.2:50052", "10.0.0.3:50053"], share=1 / 3)}})
    args = server_args.arguments(cfg, "q4", cfg.servers["q4"], "/bin/llama-server", "/m")
    assert args[args.index("--rpc") + 1] == "10.0.0.2:50052,10.0.0.3:50053"
    assert "--rpc" not in server_args.arguments(cfg, "summary", cfg.servers["summary"], "/bin/llama-server", "/m")


def test_workers_never_guessed_from_host_names():
    cfg = load(q4={"rpc_workers": ["studio2.local"]})
    with pytest.raises(ConfigError, match="kitty_servers.q4.rpc_workers: studio2.local not resolved"):
        server_args.arguments(cfg, "q4", cfg.servers["q4"], "/bin/llama-server", "/m")


# --- resolving over the inventory -----------------------------------------------------------


def view(name, groups=("inference",), worker=None, serves=None, address=None, **servers):
    return HostView(name=name, groups=tuple(groups), cfg=load(worker, **servers), serves=serves, address=address)


def resolve(*views):
    return rpc_placement.compute(views, placement.compute(views))


SPLIT_F16 = {"f16": {"rpc_workers": ["studio2.local"]}}
WORKER_ON_LAN = {"host": "10.0.0.2", "allow_beyond_loopback": True}


def test_a_remote_worker_is_reached_at_its_bind_address_and_each_host_gets_its_share():
    main = view("studio.local", ("inference", "application"), serves=["q4", "summary", "f16"], **SPLIT_F16)
    worker = view("studio2.local", worker=WORKER_ON_LAN, serves=["vision"], **SPLIT_F16)
    uses = resolve(main, worker)
    assert uses["studio.local"]["f16"].endpoints == ["10.0.0.2:50052"]
    assert uses["studio.local"]["f16"].share == 0.5
    # The worker holds the other half, and runs no llama-server for it.
    assert uses["studio2.local"]["f16"] == RpcUse(endpoints=[], definition="", share=0.5)


def test_a_worker_on_the_same_host_is_reached_on_loopback():
    host = view("@local", ("inference", "application"), worker={"port": 50099}, **{"q4": {"rpc_workers": ["@local"]}})
    uses = resolve(host)
    assert uses["@local"]["q4"].endpoints == ["127.0.0.1:50099"]
    assert uses["@local"]["q4"].share == 1.0


def test_a_worker_on_every_interface_is_reached_at_its_kitty_address():
    main = view("studio.local", ("inference", "application"), serves=["q4", "summary", "f16"], **SPLIT_F16)
    wildcard = {"host": "0.0.0.0", "allow_beyond_loopback": True}
    worker = view("studio2.local", worker=wildcard, serves=["vision"], address="10.9.9.9", **SPLIT_F16)
    assert resolve(main, worker)["studio.local"]["f16"].endpoints == ["10.9.9.9:50052"]


def test_tensor_split_sets_the_shares_in_llama_cpps_device_order():
    split = {"f16": {"rpc_workers": ["studio2.local"], "extra_args": ["--tensor-split", "3,1"]}}
    main = view("studio.local", ("inference", "application"), serves=["q4", "summary", "f16"], **split)
    worker = view("studio2.local", worker=WORKER_ON_LAN, serves=["vision"], **split)
    uses = resolve(main, worker)
    # RPC devices come first in llama.cpp's list, the main host's GPU last.
    assert (uses["studio2.local"]["f16"].share, uses["studio.local"]["f16"].share) == (0.75, 0.25)


def test_every_unusable_worker_is_named_at_once():
    workers = {"f16": {"rpc_workers": ["nowhere.local", "app.local", "studio2.local"]}}
    main = view("studio.local", serves=["q4", "summary", "f16", "vision"], **workers)
    app = view("app.local", ("application",), **workers)
    plain = view("studio2.local", serves=[], **workers)
    with pytest.raises(ConfigError) as raised:
        resolve(main, app, plain)
    message = str(raised.value)
    assert "studio.local: kitty_servers.f16.rpc_workers: 'nowhere.local' is not a host of the inventory" in message
    assert "'app.local' is not an inference host" in message
    assert "'studio2.local' runs no rpc-server: give it kitty_rpc_worker" in message


def test_a_loopback_worker_cannot_serve_another_host():
    main = view("studio.local", ("inference", "application"), serves=["q4", "summary", "f16"], **SPLIT_F16)
    worker = view("studio2.local", worker={}, serves=["vision"], **SPLIT_F16)
    with pytest.raises(ConfigError, match=r"studio2.local: kitty_rpc_worker.host: '127.0.0.1' is loopback, but "):
        resolve(main, worker)


def test_one_worker_serves_one_split_server():
    both = {name: {"rpc_workers": ["studio2.local"]} for name in ("f16", "q4")}
    main = view("studio.local", ("inference", "application"), serves=["q4", "summary", "f16"], **both)
    worker = view("studio2.local", worker=WORKER_ON_LAN, serves=["vision"], **both)
    with pytest.raises(ConfigError, match="rpc-server serves one client at a time"):
        resolve(main, worker)


def test_what_the_workers_run_is_an_input_of_the_server_that_changes_with_them():
    def definition(threads):
        worker = {**WORKER_ON_LAN, "threads": threads}
        main = view("studio.local", ("inference", "application"), serves=["q4", "summary", "f16"], **SPLIT_F16)
        return resolve(main, view("studio2.local", worker=worker, serves=["vision"], **SPLIT_F16))["studio.local"]

    assert definition(4) == definition(4)
    assert definition(4)["f16"].definition != definition(8)["f16"].definition
    cfg = load(**SPLIT_F16).model_copy(update={"rpc": definition(4)})
    (item,) = rpc_workers.server_inputs(cfg, "f16", cfg.servers["f16"])
    assert item.path == "/opt/kitty/state/rpc/f16.workers"
    assert item.wanted == f"{definition(4)['f16'].definition} 10.0.0.2:50052"


# --- the program, the build, the budget -------------------------------------------------------


def test_the_worker_program_runs_rpc_server_from_current_with_its_settings():
    cfg = load({"port": 50060, "threads": 6, "cache": True, "devices": ["Metal"]})
    prog = rpc_workers.program(cfg, LINUX, "b1-cpu-x")
    assert prog.argv == [
        "/opt/kitty/llama.cpp/current/bin/ggml-rpc-server",
        *("--host", "127.0.0.1", "--port", "50060", "--threads", "6", "--device", "Metal", "--cache"),
    ]
    assert prog.env == {"LLAMA_CACHE": "/opt/kitty/rpc-cache"}
    assert (prog.label, prog.unit) == ("com.kitty.rpc-server", "kitty-rpc-server.service")
    assert (prog.health.url, prog.health.expect) == ("telnet://127.0.0.1:50060", "tcp")


def test_only_hosts_that_need_rpc_build_it_and_only_their_build_id_changes():
    plain = llamacpp.wanted_build(load(), LINUX)
    worker = llamacpp.wanted_build(load({}), LINUX)
    main = llamacpp.wanted_build(load(**{"q4": {"rpc_workers": ["studio2.local"]}}), LINUX)
    assert "-DGGML_RPC=ON" not in plain.cmake_args and plain.targets == ("llama-server",)
    assert worker.targets == ("llama-server", "ggml-rpc-server") and "-DGGML_RPC=ON" in worker.cmake_args
    assert worker.id == main.id != plain.id


def test_the_budget_counts_each_hosts_share_of_a_split_model():
    cfg = load()
    f16 = {need.server: need for need in memory_budget.server_needs(cfg)}["f16"]
    # On a worker that runs no server of its own: half of F16's weights and KV cache, its own compute buffers.
    worker = cfg.model_copy(
        update={
            "servers": {n: s.model_copy(update={"enabled": False}) for n, s in cfg.servers.items()},
            "rpc": {"f16": RpcUse(share=0.5)},
        }
    )
    (need,) = memory_budget.server_needs(worker)
    assert need.server == "f16 (50% via RPC)"
    assert (need.weights, need.kv_cache, need.compute) == (f16.weights // 2, f16.kv_cache // 2, f16.compute)


# --- the TCP wait -------------------------------------------------------------------------


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_wait_healthy_waits_for_a_tcp_listener_that_speaks_no_http(shell, userland, tmp_path):  # noqa: F811
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    received = []

    def listen_late():
        time.sleep(1.5)
        with socket.create_server(("127.0.0.1", port)) as server:
            server.settimeout(20)
            connection, _ = server.accept()
            with connection:
                connection.settimeout(3)
                received.append(connection.recv(100))

    thread = threading.Thread(target=listen_late, daemon=True)
    thread.start()
    spec = f"rpc worker|telnet://127.0.0.1:{port}|20|{server_log(tmp_path, 'rpc')}|tcp"
    result = run(shell, userland, [str(WAIT), spec])
    thread.join(10)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"[health] rpc worker: down (telnet://127.0.0.1:{port})" in result.stdout
    assert f"[health] rpc worker: healthy (telnet://127.0.0.1:{port})" in result.stdout
    # The probe sends nothing: rpc-server would take any byte for a command.
    assert received == [b""]
