"""stop.py planned, and executed, for simulated Linux hosts and Macs: what is stopped, in which order, how."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pyinfra.api import State
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operations import run_ops
from pyinfra.api.state import StateStage

from tasks import config
from tasks.host import layout
from tasks.runbook import shutdown
from tasks.supervise import stop as supervise_stop
from tests.plan import hosts, launchd_facts, stack_facts
from tests.plan.harness import plan, prepared

CFG = config.load(hosts.DEFAULTS)
SERVERS = list(CFG.servers)
OPT = CFG.paths.opt_dir


def units(*, active: bool = True, enabled: bool = True, images: bool = True) -> dict:
    """systemd units of the model servers (and the images service) as the host has them."""
    names = [layout.server_unit(name) for name in SERVERS]
    extra = [layout.images_unit("api"), layout.images_unit("worker")] if images else []
    facts = {}
    for unit in [*extra, *names]:
        facts[f"show --all --property Id --property SubState {unit}"] = [
            f"Id={unit}",
            f"SubState={'running' if active else 'dead'}",
        ]
        facts[f"show --all --property Id --property UnitFileState {unit}"] = [
            f"Id={unit}",
            f"UnitFileState={'enabled' if enabled else 'disabled'}",
        ]
    facts[f"for f in {layout.SYSTEMD_UNITS}/{layout.IMAGES_UNIT_PREFIX}*"] = extra
    facts[f"for f in {layout.SYSTEMD_UNITS}/{layout.SERVER_UNIT_PREFIX}*"] = names
    return facts


def jobs(*, loaded: bool = True, disabled: bool = False) -> dict:
    labels = [layout.server_label(CFG, name) for name in SERVERS]
    facts = {}
    for label in labels:
        facts.update(launchd_facts.job(f"system/{label}", loaded=loaded, disabled=disabled))
    facts[f"for f in {layout.LAUNCH_DAEMONS}/{layout.IMAGES_LABEL_PREFIX}*"] = []
    facts[f"for f in {layout.LAUNCH_DAEMONS}/{CFG.launchd.label_prefix}*"] = [f"{label}.plist" for label in labels]
    return facts


def linux(*, stack: str = "running", **departures) -> dict:
    containers = {name: {"state": stack} for name in CFG.stack.services}
    return {**units(**departures), **stack_facts.compose(CFG, containers=containers), **hosts.linux()}


def mac(*, stack: str = "running", **departures) -> dict:
    containers = {name: {"state": stack} for name in CFG.stack.services}
    return {
        **jobs(**departures),
        **stack_facts.compose(CFG, containers=containers),
        **hosts.macos(),
    }


def stop_plan(facts: dict, data: dict | None = None, groups=("inference", "application")):
    return plan(facts, data=data, groups=groups, deploy_file="stop.py")


def names(result) -> list[str]:
    return [op.name for op in result.ops]


# --- Linux -----------------------------------------------------------------------------


def test_linux_stops_in_the_manuals_order_images_api_first_then_stack_then_servers():
    result = stop_plan(linux())
    assert names(result) == [
        "images api: stop and keep off at boot (kitty-images-api.service)",
        "images worker: stop and keep off at boot (kitty-images-worker.service)",
        "application stack: docker compose stop (containers and volumes kept)",
        *[f"server {n}: stop and keep off at boot (kitty-llama-{n}.service)" for n in sorted(SERVERS)],
    ]
    stack = result.op("application stack: docker compose stop (containers and volumes kept)")
    assert stack.commands == ["docker compose -p kitty -f /Users/Shared/Coding/KITT/infra/compose/docker-compose.yml "
                              "--env-file /Users/Shared/Coding/KITT/.env stop 2>&1"]  # fmt: skip


def test_graceful_stop_goes_through_systemd_and_keeps_the_unit():
    result = stop_plan(linux())
    q4 = " ".join(result.op("server q4: stop and keep off at boot (kitty-llama-q4.service)").commands)
    assert "systemctl disable --now kitty-llama-q4.service" in q4
    assert "Result" in q4
    assert "SIGKILL" not in q4 and "rm " not in q4 and "kill " not in q4


def test_emergency_kills_through_systemd_and_compose_kill_only_ours():
    result = stop_plan(linux(), data={"emergency": "true"})
    q4 = " ".join(result.op("server q4: kill and keep off at boot (kitty-llama-q4.service)").commands)
    assert "systemctl kill -s SIGKILL kitty-llama-q4.service" in q4
    assert "systemctl disable kitty-llama-q4.service" in q4
    stack = result.op("application stack: docker compose kill (containers and volumes kept)")
    assert stack.commands[0].endswith(" kill 2>&1") and "-p kitty " in stack.commands[0]
    everything = " ".join(result.commands)
    # Never by process name, never every container of the machine.
    assert "pkill" not in everything and "killall" not in everything and "docker ps" not in everything
    assert "docker rm" not in everything and "down" not in everything


def test_a_stopped_and_disabled_host_plans_nothing():
    assert names(stop_plan(linux(active=False, enabled=False, stack="exited"))) == []


def test_a_stopped_but_enabled_unit_is_only_disabled():
    result = stop_plan(linux(active=False, enabled=True, stack="exited", images=False))
    assert names(result) == [
        f"server {n}: stop and keep off at boot (kitty-llama-{n}.service)" for n in sorted(SERVERS)
    ]


def test_role_data_stops_one_role_only():
    inference = stop_plan(linux(), data={"role": "inference"})
    assert [n for n in names(inference) if not n.startswith("server ")] == []
    application = stop_plan(linux(), groups=("application",))
    assert [n for n in names(application) if n.startswith("server ")] == []


def test_a_misspelt_switch_is_refused_before_anything_is_planned():
    # Read as before, `emergency=ture` was a graceful stop, and `role=infernce` stopped nothing and passed.
    with pytest.raises(PyinfraError, match="emergency='ture': say true or false"):
        stop_plan(linux(), data={"emergency": "ture"})
    with pytest.raises(PyinfraError, match="role='infernce': say one or more of inference, application"):
        stop_plan(linux(), data={"role": "infernce"})
    both = stop_plan(linux(), data={"role": "inference, application", "emergency": "no"})
    assert names(both) == names(stop_plan(linux()))


# --- macOS -----------------------------------------------------------------------------


def test_mac_disables_then_boots_out_and_waits_for_launchd():
    result = stop_plan(mac())
    label = layout.server_label(CFG, "q4")
    q4 = " ".join(result.op(f"server q4: stop and keep off at boot ({label})").commands)
    assert q4.index(f"launchctl disable system/{label}") < q4.index(f"launchctl bootout system/{label}")
    assert "exit timeout = " in q4 and "-KILL" not in q4
    assert "stop 2>&1" in " ".join(result.commands)


def test_mac_emergency_kills_through_launchd():
    result = stop_plan(mac(), data={"emergency": "true"})
    label = layout.server_label(CFG, "q4")
    q4 = " ".join(result.op(f"server q4: kill and keep off at boot ({label})").commands)
    # Bootout first (no KeepAlive respawn once launchd let go of it), then SIGKILL what is left by
    # the PID the job had: never `launchctl kill` while it is loaded (issue 25, defect 6).
    assert "launchctl kill" not in q4
    assert q4.index("launchctl disable") < q4.index(f"launchctl print system/{label} 2>/dev/null | sed")
    assert q4.index("pid = ") < q4.index(f"launchctl bootout system/{label}") < q4.index('kill -KILL "$pid"')


def test_mac_stopped_and_disabled_plans_nothing():
    assert names(stop_plan(mac(loaded=False, disabled=True, stack="exited"))) == []


# --- Executed: the table and the verification -------------------------------------------


@dataclass
class Run:
    commands: list[str]
    error: str | None
    # What the run noted for its table: the stack's outcome, and each program's.
    stack: str
    outcomes: dict[str, str]
    state: State


def execute(responses: dict, data: dict | None = None) -> Run:
    with prepared(responses, data, ("inference", "application"), "stop.py") as (state, host, ran):
        state.set_stage(StateStage.Execute)
        error = None
        try:
            run_ops(state)
        except PyinfraError as failure:
            error = str(failure)
        return Run(
            commands=[command for command, _ in ran],
            error=error,
            stack=shutdown.stack_outcome(host).get("stack", "-"),
            outcomes={o.name: o.result for o in supervise_stop.outcomes(host)},
            state=state,
        )


def test_executed_stop_records_each_outcome_and_passes_when_ports_are_free():
    # The fake host's facts do not change: the stack was already stopped, the units are stopped now.
    run = execute(linux(stack="exited"))
    assert run.error is None
    assert run.stack == "already stopped"
    assert run.outcomes == {
        "images api": "stopped",
        "images worker": "stopped",
        **{f"server {n}": "stopped" for n in SERVERS},
    }
    # The processes check reads only kitty-ops' own paths.
    ps = [c for c in run.commands if "ps -A -o pid=" in c]
    assert ps and f"{OPT}/llama.cpp/" in ps[0]


def test_a_second_run_in_the_same_process_sees_none_of_the_first_runs_outcomes():
    # Same host name, same process; the first run's state still alive. Outcomes were module
    # globals keyed by host name: the second table reported the first run's images service.
    first = execute(linux(stack="exited"))
    second = execute(linux(stack="exited", images=False))
    assert "images api" in first.outcomes
    assert "images api" not in second.outcomes
    assert set(second.outcomes) == {f"server {n}" for n in SERVERS}
    host = first.state.inventory.get_host("@fake/kitty")
    assert {o.name for o in supervise_stop.outcomes(host)} == set(first.outcomes)


def test_a_container_still_running_after_the_stop_fails_it():
    assert execute(linux()).error is not None


def test_a_port_still_held_fails_the_stop_naming_it():
    facts = {
        "ss -ltnpH": ['LISTEN 0 128 127.0.0.1:8083 0.0.0.0:* users:(("llama-server",pid=777,fd=3))'],
        **linux(stack="exited"),
    }
    assert execute(facts).error is not None


def test_parse_of_the_stop_line():
    assert supervise_stop._parse(["kitty-stop 3 success"]) == (3.0, False)
    assert supervise_stop._parse(["kitty-stop 30 timeout"]) == (30.0, True)
    # launchd: the stop lasted the whole ExitTimeOut, so launchd killed it.
    assert supervise_stop._parse(["kitty-stop 20 20"]) == (20.0, True)
    assert supervise_stop._parse(["kitty-stop 1 20"]) == (1.0, False)
    assert supervise_stop._parse(["kitty-stop 0 0"]) == (0.0, False)


def test_render_of_the_table():
    lines = shutdown.render([("server q4", "stopped (1 s)"), ("port 8083 (server q4)", "free")])
    assert lines[0].split() == ["what", "stop"]
    assert lines[1].startswith("server q4") and lines[1].endswith("stopped (1 s)")


def test_the_rpc_worker_stops_after_the_model_servers_that_use_it():
    unit = layout.RPC_WORKER_UNIT
    # Before linux(): the fake host answers from the first key a command contains.
    facts = {
        f"show --all --property Id --property SubState {unit}": [f"Id={unit}", "SubState=running"],
        f"show --all --property Id --property UnitFileState {unit}": [f"Id={unit}", "UnitFileState=enabled"],
        f"for f in {layout.SYSTEMD_UNITS}/{layout.RPC_WORKER_UNIT.removesuffix('.service')}*": [unit],
        **linux(),
    }
    result = stop_plan(facts, data={"kitty_rpc_worker": {"port": 50052}})
    assert names(result)[-1] == f"rpc worker: stop and keep off at boot ({unit})"
    assert names(result)[-2].startswith("server ")
