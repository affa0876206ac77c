"""A server's load_mode, planned: it reaches the definition its supervisor runs, and changing it restarts that
server once and nothing else (tests/plan/test_supervise_scenarios.py's converged hosts, on both supervisors)."""

from __future__ import annotations

import json
import logging

import pytest

from tasks import config
from tasks.host import layout
from tasks.inference import servers
from tasks.supervise import launchd, systemd
from tests.plan import hosts, stack_facts
from tests.plan.harness import plan, simulated_platform
from tests.plan.test_bench_diagnose import COMPLETION, execute
from tests.plan.test_supervise_scenarios import INFERENCE, OSES, actions, converged, restart_table, row, with_servers


@pytest.mark.parametrize("os", OSES)
def test_each_manual_server_runs_with_the_load_mode_of_its_field(os):
    plat = simulated_platform(os, "admin", "arm64" if os == "macos" else "x86_64")
    cfg = config.load({**hosts.DEFAULTS, **with_servers(vision={"load_mode": "mmap+mlock"})})
    render = launchd.render if os == "macos" else systemd.render
    programs = {p.name: p for p in servers.programs(cfg, plat, "any")}
    assert set(programs) == {f"server {name}" for name in cfg.enabled_servers()}
    for name, srv in cfg.enabled_servers().items():
        argv = programs[f"server {name}"].argv
        assert argv[argv.index("--load-mode") + 1] == srv.load_mode
        text = render(programs[f"server {name}"])
        if os == "macos":
            assert f"<string>--load-mode</string>\n\t\t<string>{srv.load_mode}</string>" in text
        else:
            assert f' "--load-mode" "{srv.load_mode}"' in text
    assert cfg.servers["vision"].load_mode == "mmap+mlock" and cfg.servers["q4"].load_mode == "none"


@pytest.mark.parametrize("os", OSES)
def test_a_changed_load_mode_restarts_that_server_only_once(os, caplog):
    caplog.set_level(logging.INFO)
    result = plan(converged(os), data=with_servers(f16={"load_mode": "mmap"}), groups=INFERENCE)
    assert actions(result) == {"f16": "reload"}
    table = restart_table(caplog)
    assert row(table, "server f16").startswith("server f16 restart load_mode none → mmap")
    assert table[-1].endswith(": server f16")
    # Decided at plan time, once: no second restart waits among the conditional operations.
    assert result.conditional == []


@pytest.mark.parametrize("os", OSES)
def test_the_same_load_mode_again_restarts_nothing(os):
    result = plan(converged(os), data=with_servers(f16={"load_mode": "none"}), groups=INFERENCE)
    assert actions(result) == {} and result.ops == []


# --- bench.py --data bench_load_modes=true, executed against a simulated Mac -----------------------

CFG = config.load(hosts.DEFAULTS)
SERVERS = list(CFG.enabled_servers())


LOADED = [
    "0.00.004.000 I srv    load_model: loading model '/m.gguf'",
    "0.00.100.000 I load_tensors: loading model tensors, this can take a while... (load_mode = none)",
    "0.02.504.000 I srv  llama_server: model loaded",
]


def test_planned_the_load_mode_bench_changes_nothing():
    running = stack_facts.compose(CFG, containers={n: {"state": "running"} for n in CFG.stack.services})
    for facts in (hosts.macos(), hosts.linux()):
        planned = plan({**running, **facts}, deploy_file="bench.py", data={"bench_load_modes": True})
        assert planned.ops == [] and planned.conditional == []
        # Nothing is stopped, loaded or started while planning.
        assert not [c for c, _ in planned.executed if "kitty-load-bench" in c or "bootout" in c or "stop" in c]


def test_on_a_mac_each_server_is_booted_out_timed_in_each_mode_after_purge_and_bootstrapped_before_the_next(tmp_path):
    responses = {
        "kitty-load-bench": LOADED,
        "wc -c <": "2400000000",
        "/completion": COMPLETION,
        "until curl": "31250",
        **hosts.macos(),
    }
    data = {"bench_load_modes": True, "kitty_bench": {"report_dir": str(tmp_path)}}
    commands = execute(responses, "bench.py", data)
    modes = CFG.bench.load_modes_measured
    steps = []
    for c in commands:
        if "kitty-load-bench" in c:
            steps.append(("load", c.split("--load-mode ")[1].split()[0]))
        elif "purge" in c:
            steps.append(("purge",))
        elif "launchctl bootout" in c and "until curl" not in c:
            steps.append(("stop", c.split("system/")[1].split()[0]))
        elif "launchctl bootstrap" in c and "until curl" in c:
            steps.append(("start", c.split("system/")[1].split()[0]))
    expected = []
    for name in SERVERS:
        label = layout.server_label(CFG, name)
        expected += [("stop", label), *[step for mode in modes for step in (("purge",), ("load", mode))]]
        expected += [("start", label)]
    assert steps == expected
    # Each throwaway: the server's own user, a free loopback port, never the production port.
    loads = [c for c in commands if "kitty-load-bench" in c]
    assert all("sudo -n -u admin -- " in c and "--port 0 " in c for c in loads)
    assert not any(f"--port {CFG.servers[n].port} " in c for c in loads for n in SERVERS)
    report = json.loads(next(tmp_path.glob("bench-*.json")).read_text())
    rows = report["load_modes"]
    assert [(r["server"], r["mode"]) for r in rows] == [(n, m) for n in SERVERS for m in modes]
    assert all(r["cache"] == "cold" and r["load_s"] == 2.5 and r["gb_per_s"] == 0.96 for r in rows), rows
    assert all(r["model_gb"] == 2.4 for r in rows)
    # Every mode loaded at the same speed here: the first measured wins.
    assert report["fastest_load_mode"] == {n: modes[0] for n in SERVERS}
    (load_csv,) = tmp_path.glob("bench-*-load-modes.csv")
    assert load_csv.read_text().splitlines()[0].startswith("server,mode,cache,model_gb,load_s,gb_per_s")


def test_a_server_that_cannot_be_stopped_gets_no_throwaway_beside_it(tmp_path):
    responses = {
        "kitty-load-bench": LOADED,
        "launchctl bootout": {"success": False, "stderr": "Boot-out failed: 5: Input/output error"},
        "/completion": COMPLETION,
        "until curl": "31250",
        **hosts.macos(),
    }
    data = {"bench_load_modes": True, "kitty_bench": {"report_dir": str(tmp_path)}}
    commands = execute(responses, "bench.py", data)
    assert not [c for c in commands if "kitty-load-bench" in c]
    rows = json.loads(next(tmp_path.glob("bench-*.json")).read_text())["load_modes"]
    assert len(rows) == len(SERVERS) * len(CFG.bench.load_modes_measured)
    assert all(
        r["load_s"] is None and "could not be stopped first: Boot-out failed" in r["why"]["load_s"] for r in rows
    )
