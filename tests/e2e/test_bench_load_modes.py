"""bench.py --data bench_load_modes=true against the real sandbox host: every load mode of llama.cpp b11434
loads each enabled server's model in a throwaway llama-server, and the rows are consistent with the host.

Consistent means: each mode loaded and llama.cpp's own log says it used that mode; the GB in the row are
the model file's real size on the host; GB/s is that size over the row's seconds; those seconds are real
(they fit, summed, inside the window in which systemd saw the production server stopped). The production
servers are stopped and started again through systemd, once each, and are healthy afterwards; no
throwaway server and no throwaway log is left on the host.
"""

from __future__ import annotations

import json
import time

import pytest

from tasks.host import layout
from tests.e2e.conftest import sandbox_config, ssh, wait_healthy
from tests.e2e.test_bench_diagnose import report, run, units

pytestmark = pytest.mark.e2e

MODES = ["none", "mmap", "mlock", "mmap+mlock", "dio"]


def test_every_load_mode_loads_each_server_and_its_speed_is_its_real_size_over_its_real_time(
    sandbox, first_converge, tmp_path
):
    cfg = sandbox_config()
    before = units(sandbox)
    since = ssh(sandbox, "date +%s").stdout.strip()
    t0 = time.monotonic()
    result = run(
        sandbox,
        "bench.py",
        "--data",
        "bench_load_modes=true",
        "--data",
        f"kitty_bench={json.dumps({'report_dir': str(tmp_path)})}",
    )
    wall = time.monotonic() - t0
    assert result.code == 0, result.output[-3000:]
    print(f"bench with load modes: {wall:.1f} s")
    data = report(tmp_path)
    rows = data["load_modes"]
    servers = list(cfg.enabled_servers())
    assert [(r["server"], r["mode"]) for r in rows] == [(s, m) for s in servers for m in MODES]
    after = units(sandbox)
    for server in servers:
        srv = cfg.servers[server]
        model = cfg.models[srv.model]
        paths = " ".join(f"{cfg.paths.models_dir}/{model.dir}/{f.name}" for f in model.files)
        size = sum(int(n) for n in ssh(sandbox, f"sudo stat -c %s {paths}").stdout.split())
        mine = [r for r in rows if r["server"] == server]
        for row in mine:
            print(row)
            # Every mode loads, and llama.cpp says it loaded in that mode.
            assert row["load_s"] is not None and row["load_s"] > 0, row
            assert row["mode_logged"] == row["mode"], row
            # The real file size, and the speed computed from it and the time.
            assert row["model_gb"] == round(size / 1e9, 3), row
            assert row["gb_per_s"] == round(size / 1e9 / row["load_s"], 3), row
            assert row["cache"] in ("cold", "warm"), row
            if row["cache"] == "warm":
                assert "drop_caches" in row["why"]["cache"], row
        # Real time: the loads happened while systemd had the production server stopped.
        stopped_for = (
            int(after[server]["ActiveEnterTimestampMonotonic"]) - int(after[server]["InactiveEnterTimestampMonotonic"])
        ) / 1e6
        assert sum(r["load_s"] for r in mine) < stopped_for < wall, (mine, stopped_for)
        # Stopped and started again once, through systemd, and healthy.
        assert after[server]["InvocationID"] != before[server]["InvocationID"], f"{server} was not started again"
        journal = ssh(sandbox, f"sudo journalctl -u {layout.server_unit(server)} --since @{since} -o cat --no-pager")
        assert journal.stdout.count("Started ") == 1, journal.stdout
        wait_healthy(srv.port)
        fastest = data["fastest_load_mode"][server]
        best = max(mine, key=lambda r: r["gb_per_s"])
        assert fastest == best["mode"]
        assert f"fastest load mode for {server}: {fastest} ({best['gb_per_s']:g} GB/s" in result.output
    # Beside the manual's table: the sandbox's q4 plays the manual's Q4 server (45 s cold).
    assert all(r["expected_cold_s"] == 45 for r in rows if r["server"] == "q4")
    assert (tmp_path / f"{next(tmp_path.glob('bench-*.json')).stem}-load-modes.csv").exists()
    # Nothing of the throwaways is left: only the production servers run, no log is left behind.
    running = ssh(sandbox, "pgrep -c -x llama-server", check=False).stdout.strip()
    assert running == str(len(servers)), running
    assert ssh(sandbox, "ls /tmp/kitty-load-bench.* 2>/dev/null | wc -l").stdout.strip() == "0"
