"""bench.py and diagnose.py on simulated Macs and Linux hosts: planned, they change nothing; executed, they
ask the platform's own tools (launchctl, purge, lsof, vm_stat / systemctl, drop_caches, /proc/meminfo)."""

from __future__ import annotations

import json
import logging

import pytest
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operations import run_ops
from pyinfra.api.state import StateStage

from tasks import config
from tasks.host import layout
from tasks.runbook import diagnose
from tests.plan import hosts, launchd_facts, stack_facts
from tests.plan.harness import plan, prepared

CFG = config.load(hosts.DEFAULTS)
SERVERS = list(CFG.enabled_servers())
COMPLETION = json.dumps({"content": "x", "timings": {"prompt_per_second": 512.25, "predicted_per_second": 31.04}})


def running_stack() -> dict:
    return stack_facts.compose(CFG, containers={name: {"state": "running"} for name in CFG.stack.services})


def execute(responses: dict, deploy_file: str, data: dict | None = None, fails: bool = False) -> list[str]:
    """Run `deploy_file`'s operations against the simulated host; `fails`: the run must fail
    (pyinfra: the only host failed, "No hosts remaining")."""
    with prepared(responses, data, ("inference", "application"), deploy_file) as (state, host, ran):
        state.set_stage(StateStage.Execute)
        if fails:
            with pytest.raises(PyinfraError, match="No hosts remaining"):
                run_ops(state)
        else:
            run_ops(state)
        return [command for command, _ in ran]


@pytest.mark.parametrize("os", ["macos", "linux"])
@pytest.mark.parametrize("deploy_file", ["bench.py", "diagnose.py"])
def test_planned_they_change_nothing(os, deploy_file):
    facts = hosts.macos() if os == "macos" else hosts.linux()
    planned = plan({**running_stack(), **facts}, deploy_file=deploy_file, data={"bench_restart": True})
    assert planned.ops == [] and planned.conditional == []


def test_bench_on_a_mac_restarts_through_launchctl_after_purge_and_times_from_before_the_restart(tmp_path):
    label = layout.server_label(CFG, "q4")
    responses = {
        "/completion": COMPLETION,
        f"launchctl print system/{label} | sed": "4242",
        "ps -o rss= -p 4242": "18874368",
        "until curl": "31250",
        **hosts.macos(),
    }
    data = {"bench_restart": True, "kitty_bench": {"report_dir": str(tmp_path)}}
    commands = execute(responses, "bench.py", data)
    # Through bootout, its stop time, bootstrap: never kickstart -k's SIGKILL (issue 25, defect 3).
    restarts = [c for c in commands if "launchctl bootout" in c]
    assert not [c for c in commands if "kickstart" in c]
    # purge before the first (cold) restart of each server, then a warm restart: one server at a time.
    order = [
        ("purge" if "purge" in c else c.split("system/")[1].split()[0])
        for c in commands
        if "purge" in c or c in restarts
    ]
    expected = []
    for name in SERVERS:
        label = layout.server_label(CFG, name)
        expected += ["purge", label, label]
    assert order == expected
    assert all(c.index("t0=") < c.index("launchctl bootout") < c.index("launchctl bootstrap") for c in restarts)
    (report,) = tmp_path.glob("bench-*.json")
    rows = {row["server"]: row for row in json.loads(report.read_text())["servers"]}
    assert rows["q4"]["cold_s"] == rows["q4"]["warm_s"] == 31.25
    assert rows["q4"]["prompt_tps"] == 512.2 and rows["q4"]["rss_gb"] == 18.0
    # Metal without buffer sizes in its log: no figure, and why.
    assert rows["q4"]["gpu_gb"] is None and "metal buffer sizes" in rows["q4"]["why"]["gpu_gb"]


def test_bench_on_linux_says_why_when_the_page_cache_cannot_be_dropped(tmp_path):
    data = {"bench_restart": True, "kitty_bench": {"report_dir": str(tmp_path)}}
    responses = {
        "drop_caches": {
            "success": False,
            "stderr": "sh: 1: cannot create /proc/sys/vm/drop_caches: Read-only file system",
        },
        "/completion": COMPLETION,
        "until curl": "400",
    }
    commands = execute({**responses, **hosts.linux()}, "bench.py", data)
    # Asked once: the host refuses it for every server.
    assert len([c for c in commands if "drop_caches" in c]) == 1
    assert len([c for c in commands if "systemctl restart" in c]) == len(SERVERS)
    (report,) = tmp_path.glob("bench-*.json")
    for row in json.loads(report.read_text())["servers"]:
        assert row["cold_s"] is None and "page cache" in row["why"]["cold_s"]
        assert row["warm_s"] == 0.4


def test_diagnose_on_a_mac_names_a_crash_loop_and_an_unloaded_job_from_launchctl(caplog):
    looping, stopped, *running = SERVERS
    responses = {}
    for name in running:
        responses.update(launchd_facts.job(f"system/{layout.server_label(CFG, name)}", pid=4242))
    responses[f"launchctl print system/{layout.server_label(CFG, looping)} 2>&1"] = [
        "\tstate = spawn scheduled",
        "\truns = 7",
        "\tlast exit code = 1",
    ]
    responses.update(launchd_facts.job(f"system/{layout.server_label(CFG, stopped)}", loaded=False))
    responses["lsof +c 0"] = [
        line for name in running for line in ("p4242", "cllama-server", f"n127.0.0.1:{CFG.servers[name].port}")
    ]
    responses["vm_stat; sysctl hw.memsize vm.swapusage"] = [
        "Mach Virtual Memory Statistics: (page size of 16384 bytes)",
        "Pages free:                              1000000.",
        "Pages inactive:                          500000.",
        f"hw.memsize: {256 * 2**30}",
        "vm.swapusage: total = 2048.00M  used = 1024.00M  free = 1024.00M  (encrypted)",
        "iogpu.wired_limit_mb: 196608",
    ]
    with caplog.at_level(logging.INFO):
        # Findings: diagnose fails, as the health table does.
        commands = execute({**running_stack(), **responses, **hosts.macos()}, "diagnose.py", fails=True)
    text = caplog.text
    assert f"server {looping}: crash loop: 6 restarts, last exit 1" in text
    assert f"server {stopped}: not running (not loaded)" in text and diagnose.REMEDY["stopped"] in text
    assert "memory: 1.0 GiB swapped out" in text
    # The swap is reported, and is not among what fails the run (a Mac keeps swap long after).
    faults = int(text.split("diagnose: ")[1].split(" finding(s) to act on")[0])
    assert faults == len([line for line in text.splitlines() if "    remedy: " in line]) - 1
    # The simulated Mac has no model files: each server's files are named missing, nothing else is.
    for name in running:
        said = [line for line in text.splitlines() if f"server {name}:" in line]
        # Where its GPU layers are (its load log holds no load here), then its findings.
        assert [line for line in said if "layers: unknown" in line], said
        found = [line for line in said if "layers: unknown" not in line]
        assert found and all("is missing" in line for line in found), found
    # Read-only: nothing that starts, stops or writes.
    assert not [c for c in commands if any(w in c for w in ("kickstart", "bootout", "bootstrap", " > ", "purge"))]
