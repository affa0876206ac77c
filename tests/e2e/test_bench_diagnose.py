"""bench.py and diagnose.py against a real sandbox host (systemd, the tiny model on two llama-servers).

bench: its table and JSON for every server, every cell a number or a reason; without bench_restart
nothing on the host changes, with it each server restarts once (the container refuses drop_caches, so no
cold start is timed and the table says so), one at a time, each waited for.
diagnose: one server stopped through systemd and one crash-looping (a bad flag put into its unit by hand)
are named with the manual's remedies; the support bundle holds none of the stack's secret values.
Each test leaves the host converged again, as the next module expects.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from sandbox import converge as sandbox_converge
from tasks.app import secrets
from tasks.host import layout
from tasks.runbook import bench, diagnose
from tests.e2e.conftest import Converge, converge, sandbox_config, ssh, wait_healthy

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
UNIT_PROPS = "InvocationID,MainPID,ActiveEnterTimestampMonotonic,InactiveEnterTimestampMonotonic"


def run(name: str, script: str, *args: str) -> Converge:
    """`pyinfra inventory.py <script>` against the sandbox, as an admin laptop runs it."""
    env = {**os.environ, **sandbox_converge.sandbox_env(name), **sandbox_converge.QUIET_HF}
    command = [sys.executable, "-m", "pyinfra", "inventory.py", script, "-y"]
    command += ["--group-data", str(sandbox_converge.GROUP_DATA), *args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    return Converge(result.returncode, None, result.stdout + result.stderr)


def units(name: str) -> dict[str, dict[str, str]]:
    found = {}
    for server in sandbox_config().enabled_servers():
        out = ssh(name, f"systemctl show -p {UNIT_PROPS} {layout.server_unit(server)}").stdout
        found[server] = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return found


def report(tmp_path: Path) -> dict:
    (found,) = tmp_path.glob("bench-*.json")
    return json.loads(found.read_text())


def every_cell_is_a_number_or_says_why(data: dict) -> None:
    for row in data["servers"]:
        for column in bench.COLUMNS[2:]:
            value = row[column]
            reason = row["why"].get("expected" if column.startswith("expected_") else column)
            assert isinstance(value, (int, float)) or reason, f"{row['server']}.{column}: no number and no reason"


def test_bench_without_restart_changes_nothing_and_fills_every_cell(sandbox, first_converge, tmp_path):
    cfg = sandbox_config()
    before = units(sandbox)
    result = run(sandbox, "bench.py", "--data", f"kitty_bench={json.dumps({'report_dir': str(tmp_path)})}")
    assert result.code == 0, result.output[-3000:]
    assert units(sandbox) == before, "bench without bench_restart restarted a server"
    # The table, beside the manual's figures (the sandbox's q4 plays the manual's Q4 server).
    assert "manual: cold/warm s, RAM/VRAM GB" in result.output
    assert any(line.split("] ")[-1].startswith("q4 ") and "45/30, 18/16" in line for line in result.output.splitlines())
    data = report(tmp_path)
    assert data["restarted"] is False and [r["server"] for r in data["servers"]] == list(cfg.enabled_servers())
    every_cell_is_a_number_or_says_why(data)
    for row in data["servers"]:
        # Measured for real: llama-server's own timings and the process's resident memory.
        assert row["prompt_tps"] > 0 and row["gen_tps"] > 0 and 0 < row["rss_gb"] < 4, row
        assert row["gpu_gb"] is None and row["why"]["gpu_gb"].startswith("n/a: no GPU"), row
        assert row["cold_s"] is None and "bench_restart=true" in row["why"]["cold_s"], row
    assert f"q4 gpu_gb: {data['servers'][0]['why']['gpu_gb']}" in result.output
    assert (tmp_path / Path(next(tmp_path.glob("bench-*.json")).name).with_suffix(".csv").name).exists()


def test_bench_restart_restarts_each_server_once_one_at_a_time(sandbox, first_converge, tmp_path):
    cfg = sandbox_config()
    before = units(sandbox)
    since = ssh(sandbox, "date +%s").stdout.strip()
    t0 = time.monotonic()
    result = run(
        sandbox,
        "bench.py",
        "--data",
        "bench_restart=true",
        "--data",
        f"kitty_bench={json.dumps({'report_dir': str(tmp_path)})}",
    )
    assert result.code == 0, result.output[-3000:]
    print(f"bench with restarts: {time.monotonic() - t0:.1f} s")
    after = units(sandbox)
    data = report(tmp_path)
    assert data["restarted"] is True
    every_cell_is_a_number_or_says_why(data)
    rows = {row["server"]: row for row in data["servers"]}
    cache_dropped = ssh(sandbox, "sudo sh -c 'echo 1 > /proc/sys/vm/drop_caches'", check=False).returncode == 0
    for server in cfg.enabled_servers():
        row = rows[server]
        assert after[server]["InvocationID"] != before[server]["InvocationID"], f"{server} was not restarted"
        assert 0 < row["warm_s"] < cfg.servers[server].health_timeout, row
        if cache_dropped:
            assert row["cold_s"] > 0, row
        else:
            # A container may not drop the page cache: no cold figure, and the table says why instead.
            assert row["cold_s"] is None and "page cache" in row["why"]["cold_s"], row
            assert f"{server} cold_s: {row['why']['cold_s']}" in result.output
        started = ssh(
            sandbox, f"sudo journalctl -u {layout.server_unit(server)} --since @{since} -o cat --no-pager"
        ).stdout
        assert started.count("Started ") == (2 if cache_dropped else 1), started
    # One at a time, each waited for: the second server went down only after the first was back and healthy.
    first, second = list(cfg.enabled_servers())[:2]
    first_up = int(after[first]["ActiveEnterTimestampMonotonic"])
    second_down = int(after[second]["InactiveEnterTimestampMonotonic"])
    assert first_up + 0.5 * rows[first]["warm_s"] * 1e6 < second_down, (after, rows)
    for server in cfg.enabled_servers():
        wait_healthy(cfg.servers[server].port)


def test_diagnose_names_a_stopped_and_a_crash_looping_server_and_its_bundle_keeps_no_secret(
    sandbox, first_converge, tmp_path
):
    cfg = sandbox_config()
    canaries = list(secrets.secret_values(cfg.stack, ROOT).values())
    assert len(canaries) >= 2, "the sandbox's secrets file gives the stack its secrets"
    looping, stopped = "q4", "summary"
    unit_file = f"/etc/systemd/system/{layout.server_unit(looping)}"
    # A flag llama-server refuses, carrying the stack's secret values: it prints them on every start.
    bad = "--kitty-canary=" + ",".join(canaries)
    try:
        ssh(sandbox, f"sudo systemctl stop {layout.server_unit(stopped)}")
        ssh(
            sandbox,
            f"sudo sed -i 's|^ExecStart=\\(.*\\)$|ExecStart=\\1 \"{bad}\"|' {unit_file} && "
            f"sudo systemctl daemon-reload && sudo systemctl restart {layout.server_unit(looping)}",
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shown = ssh(sandbox, f"systemctl show -p NRestarts --value {layout.server_unit(looping)}").stdout
            if shown.strip().isdigit() and int(shown) >= 1:
                break
            time.sleep(2)
        else:
            pytest.fail(f"{looping} did not crash-loop: {shown}")
        bundle_path = tmp_path / "support.tar.gz"
        result = run(sandbox, "diagnose.py", "--data", f"diagnose_bundle={bundle_path}")
        # Findings: the command fails (as the health table does), after writing the bundle.
        assert result.code != 0, result.output[-3000:]
        out = result.output
        assert f"server {looping}: crash loop:" in out and diagnose.REMEDY["crash-loop"] in out, out[-3000:]
        assert f"server {stopped}: not running (inactive/dead)" in out and diagnose.REMEDY["stopped"] in out
        with tarfile.open(bundle_path) as tar:
            text = "".join(tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile())
        for canary in canaries:
            assert canary not in text and canary not in out
        findings = json.loads(text)
        tail = findings["facts"]["servers"][looping]["log_tail"]
        # The secret was in the log tail, and went out redacted.
        assert "invalid argument: --kitty-canary=" + diagnose.REDACTED in tail, tail
        assert {f["subject"] for f in findings["findings"]} >= {f"server {looping}", f"server {stopped}"}
    finally:
        back = converge(sandbox)
    assert back.code == 0, back.output[-3000:]
    assert bad not in ssh(sandbox, f"cat {unit_file}").stdout
    for server in (looping, stopped):
        wait_healthy(cfg.servers[server].port)
    again = run(sandbox, "diagnose.py")
    assert f"server {looping}:" not in again.output and f"server {stopped}:" not in again.output, again.output
    # Exit 0 exactly when nothing is to be acted on (this machine's own memory may be a finding).
    assert (again.code == 0) == ("to act on" not in again.output), again.output[-3000:]
