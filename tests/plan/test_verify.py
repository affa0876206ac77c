"""The health table, planned and EXECUTED against simulated converged hosts (pyinfra's @fake connector).

Planning must not probe (the servers may not exist yet) and must plan no
change; executing must probe once, print the table, count as "No changes"
when everything is healthy, and fail naming the service when it is not.
"""

from __future__ import annotations

import logging

import pytest
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operations import run_ops
from pyinfra.api.state import StateStage
from pyinfra_cli.prints import build_results_json

from tasks import config
from tasks.runbook import verify
from tests.plan import hosts
from tests.plan.harness import plan, prepared

CFG = config.load(hosts.DEFAULTS)
OP = "Verification | Health table"


def probe_output(*, down: tuple[str, ...] = (), loading: tuple[str, ...] = ()) -> list[str]:
    """What the probe prints on a host running every default server and stack service."""
    lines = []
    for name in CFG.enabled_servers():
        code = "000" if name in down else "503" if name in loading else "200"
        lines.append(f"{verify.MARK}|server|{name}|http {code} 0.004 {7 if code == '000' else 0}")
    for name, service in CFG.stack.services.items():
        if service.health and service.health.startswith("/"):
            lines.append(f"{verify.MARK}|stack|{name}|http {'000 0.001 7' if name in down else '200 0.012 0'}")
        else:
            lines.append(f"{verify.MARK}|stack|{name}|{'failed' if name in down else 'ok'} 35")
    return lines


def with_probe(facts: dict, lines: list[str]) -> dict:
    # First match wins: the probe's key goes in front.
    return {verify.MARK: lines, **facts}


def execute(responses: dict, groups=("inference", "application")):
    """Plan and run deploy.py on one fake host. Returns (state, host, commands it ran with their arguments)."""
    with prepared(responses, groups=groups) as (state, host, ran):
        planned_probes = [command for command, _ in ran if verify.MARK in command]
        state.set_stage(StateStage.Execute)
        try:
            run_ops(state)
        except PyinfraError as error:
            # pyinfra's way of saying the only host failed: the tests look at why.
            assert "No hosts remaining" in str(error)
        return state, host, ran, planned_probes


def health_op(state, host):
    (op_hash,) = [h for h in state.get_op_order() if OP in state.op_meta[h].names]
    return state.ops[host][op_hash].operation_meta


def changed(state) -> list[str]:
    return [op["name"] for op in build_results_json(state)["operations"] if op["success"]]


# --- Planning ----------------------------------------------------------------------


@pytest.mark.parametrize("facts", [hosts.linux_converged, hosts.macos_converged], ids=["linux", "macos"])
def test_planning_a_converged_host_neither_probes_nor_plans_a_change(facts):
    result = plan(facts())
    assert result.ops == []
    assert not [command for command, _ in result.executed if verify.MARK in command]


def test_a_host_without_roles_gets_no_health_table():
    result = plan(hosts.linux_converged(), groups=())
    assert not [command for command, _ in result.executed if verify.MARK in command]


# --- Executing -----------------------------------------------------------------------


def test_a_healthy_converged_linux_host_prints_the_table_and_changes_nothing(caplog):
    caplog.set_level(logging.INFO, logger="pyinfra")
    state, host, ran, planned_probes = execute(with_probe(hosts.linux_converged(), probe_output()))
    assert planned_probes == [], "the probe ran while planning"
    meta = health_op(state, host)
    assert meta.did_succeed() and not meta.did_change()
    assert changed(state) == [] and not state.failed_hosts
    probes = [(command, arguments) for command, arguments in ran if verify.MARK in command]
    assert len(probes) == 1
    command, arguments = probes[0]
    # The admin is not root: the stack's probes reach the engine with sudo.
    assert arguments.get("_sudo") is True
    assert "curl -s -o /dev/null" in command and "http://127.0.0.1:8083/health" in command
    assert "exec -T redis redis-cli ping" in command
    log = caplog.text
    assert "service" in log and "latency" in log
    assert "server q4" in log and "healthy" in log and "4 ms" in log
    assert "stack postgres" in log and "35 ms" in log


def test_a_server_down_fails_the_converge_naming_it_and_its_log(caplog):
    caplog.set_level(logging.INFO, logger="pyinfra")
    state, host, _, _ = execute(with_probe(hosts.linux_converged(), probe_output(down=("summary",))))
    meta = health_op(state, host)
    assert meta.did_error()
    assert host in state.failed_hosts
    errors = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert "server summary (port 8085, down)" in errors
    assert f"{CFG.paths.logs_dir}/llamacpp-summary.log" in errors
    assert "journalctl -u kitty-llama-summary.service" in errors
    assert "server q4" not in errors


def test_a_loading_server_and_a_failed_stack_service_are_both_named(caplog):
    caplog.set_level(logging.INFO, logger="pyinfra")
    facts = with_probe(hosts.linux_converged(), probe_output(loading=("q4",), down=("redis",)))
    state, host, _, _ = execute(facts)
    assert health_op(state, host).did_error()
    errors = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert "2 of " in errors
    assert "server q4 (port 8083, loading)" in errors
    assert "stack redis (port 6379, failed): look at docker compose -p kitty logs redis" in errors


def test_a_healthy_mac_probes_through_colimas_socket_without_sudo(caplog):
    caplog.set_level(logging.INFO, logger="pyinfra")
    state, host, ran, _ = execute(with_probe(hosts.macos_converged(), probe_output()))
    meta = health_op(state, host)
    assert meta.did_succeed() and not meta.did_change()
    (arguments,) = [arguments for command, arguments in ran if verify.MARK in command]
    assert not arguments.get("_sudo")
    env = arguments.get("_env") or {}
    assert env.get("DOCKER_HOST") == "unix:///Users/admin/.colima/default/docker.sock"
    assert env.get("PATH", "").startswith("/opt/homebrew/bin:")


def test_a_mac_server_down_points_at_launchctl(caplog):
    caplog.set_level(logging.INFO, logger="pyinfra")
    state, host, _, _ = execute(with_probe(hosts.macos_converged(), probe_output(down=("f16",))))
    assert health_op(state, host).did_error()
    errors = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert "server f16 (port 8082, down)" in errors
    assert "sudo launchctl print system/com.kitty.llama-server.f16" in errors


def test_an_inference_only_host_probes_only_its_servers():
    state, host, ran, _ = execute(with_probe(hosts.linux_converged(), probe_output()), groups=("inference",))
    assert health_op(state, host).did_succeed()
    (command, arguments) = [(c, a) for c, a in ran if verify.MARK in c][0]
    assert "|server|q4|" in command and "|stack|" not in command
    assert not arguments.get("_sudo")
