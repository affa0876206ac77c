"""The supervisor scenarios of tests/plan/test_supervise_scenarios.py, for real on the sandbox host (systemd).

What restarted is read from systemd itself: a unit whose InvocationID changed
during a converge was (re)started by it, once (systemd gives every start a new
id). The same scenarios, planned for launchd and executed against the
simulated Mac (tests/macsim), must give the same restart sets.
"""

from __future__ import annotations

import pytest

from tasks.host import layout
from tests.e2e.conftest import converge, sandbox_config, sandbox_data, ssh

pytestmark = pytest.mark.e2e


def invocations(name: str) -> dict[str, str]:
    ids = {}
    for server in sandbox_config().servers:
        unit = layout.server_unit(server)
        ids[server] = ssh(name, f"systemctl show -p InvocationID --value {unit}", check=False).stdout.strip()
    return ids


def restarted(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {server for server, now in after.items() if now and now != before.get(server)}


def converge_counting(name, tmp_path, overrides=None) -> tuple[set[str], object]:
    before = invocations(name)
    result = converge(name, tmp_path, overrides=overrides)
    assert result.code == 0, result.output[-3000:]
    return restarted(before, invocations(name)), result


def test_no_change_restarts_nothing(sandbox, first_converge, tmp_path):
    assert converge_counting(sandbox, tmp_path)[0] == set()


def test_one_flag_restarts_that_server_once(sandbox, first_converge, tmp_path):
    servers = sandbox_data()["kitty_servers"]
    servers["summary"]["ctx_size"] = servers["summary"]["ctx_size"] // 2
    moved, result = converge_counting(sandbox, tmp_path, {"kitty_servers": servers})
    assert moved == {"summary"}
    assert "server summary: reload (its definition changed)" in result.output
    # The restart table names the changed flag and its values.
    assert "ctx_size 1024 → 512" in result.output
    assert "will (re)start or stop: server summary" in result.output
    assert converge_counting(sandbox, tmp_path)[0] == {"summary"}  # and back


def test_a_replaced_model_file_restarts_the_servers_that_use_it(sandbox, first_converge, tmp_path):
    cfg = sandbox_config()
    model = cfg.models[cfg.servers["q4"].model]
    stamp = f"{cfg.paths.models_dir}/{model.dir}/.kitty/{model.files[0].name}.stamp"
    # A stamp that no longer matches: the file is verified (hashed) again, and re-stamped with a new mtime.
    ssh(sandbox, f"sudo touch {cfg.paths.models_dir}/{model.dir}/{model.files[0].name}")
    users = {n for n, s in cfg.enabled_servers().items() if cfg.servers[n].model == cfg.servers["q4"].model}
    moved, result = converge_counting(sandbox, tmp_path)
    assert moved == users, result.output[-3000:]
    assert ssh(sandbox, f"test -f {stamp}", check=False).returncode == 0


def test_a_disabled_and_a_deleted_server_are_removed(sandbox, first_converge, tmp_path):
    servers = sandbox_data()["kitty_servers"]
    servers["summary"]["enabled"] = False
    moved, _ = converge_counting(sandbox, tmp_path, {"kitty_servers": servers})
    assert moved == set()
    unit = layout.server_unit("summary")
    assert ssh(sandbox, f"test -e /etc/systemd/system/{unit}", check=False).returncode != 0
    assert converge_counting(sandbox, tmp_path)[0] == {"summary"}
    del servers["summary"]
    converge_counting(sandbox, tmp_path, {"kitty_servers": servers})
    assert ssh(sandbox, f"systemctl is-active {unit}", check=False).stdout.strip() != "active"
    assert ssh(sandbox, f"test -e /etc/systemd/system/{unit}", check=False).returncode != 0
    assert converge_counting(sandbox, tmp_path)[0] == {"summary"}


def test_a_converge_stopped_after_current_moved_is_finished_by_the_next(sandbox, first_converge, tmp_path):
    """As if a converge moved `current` and died before the restarts: the record still names the old build."""
    cfg = sandbox_config()
    root = layout.llamacpp_dir(cfg)
    current = ssh(sandbox, f"readlink {root}/current").stdout.strip()
    # Pretend each server was started on another build: the record is the host's only memory of it.
    records = layout.records_dir(cfg)
    for server in cfg.enabled_servers():
        record = f"{records}/{layout.server_unit(server)}.started"
        ssh(sandbox, f"sudo sed -i 's|^input llama.cpp=.*|input llama.cpp={root}/builds/an-older-build|' {record}")
    moved, result = converge_counting(sandbox, tmp_path)
    assert moved == set(cfg.enabled_servers()), result.output[-3000:]
    assert "llama.cpp an-older-build →" in result.output
    assert ssh(sandbox, f"readlink {root}/current").stdout.strip() == current
    assert converge_counting(sandbox, tmp_path)[0] == set()
