"""A server's load_mode, planned: it reaches the definition its supervisor runs, and changing it restarts that
server once and nothing else (tests/plan/test_supervise_scenarios.py's converged hosts, on both supervisors)."""

from __future__ import annotations

import logging

import pytest

from tasks import config, servers
from tasks.supervise import launchd, systemd
from tests.plan import hosts
from tests.plan.harness import plan, simulated_platform
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
