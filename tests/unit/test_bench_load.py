"""The load-mode benchmark: llama.cpp's real load log parsed into seconds and GB/s, the throwaway's command line,
and its host script run for real under dash, busybox and bash against a stand-in server."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tasks import config
from tasks.runbook import bench_load
from tests.unit.data import DEFAULTS, host_data

# llama-server b11434 (CPU build) loading SmolLM2-135M Q4_1 (98,362,432 bytes) with
# --load-mode none --log-prefix --log-timestamps -lv 4: the lines the host script keeps.
REAL_LOG = """\
0.00.004.315 I srv    load_model: loading model '/models/SmolLM2-135M-Instruct.Q4_1.gguf'
0.00.143.423 I llama_model_loader: loaded meta data with 33 key-value pairs and 272 tensors from /models/x.gguf
0.00.226.448 I load_tensors: loading model tensors, this can take a while... (load_mode = none)
0.00.851.578 I srv    load_model: initializing, n_slots = 4, n_ctx_slot = 512, kv_unified = 'true'
0.00.864.822 I srv  llama_server: model loaded
"""
SMOLLM2_BYTES = 98_362_432
MLOCK_REFUSED = (
    "0.01.892.076 W warning: failed to mlock 96579584-byte buffer (after previously locking 0 bytes): "
    "Cannot allocate memory"
)


def test_the_load_time_is_llama_cpps_own_from_its_first_model_line_to_model_loaded():
    assert bench_load.load_seconds(REAL_LOG.splitlines()) == (round(0.864822 - 0.004315, 6), None)
    assert bench_load.mode_logged(REAL_LOG.splitlines()) == "none"


def test_minutes_in_the_stamp_count():
    assert bench_load.timestamp("2.05.250.125 I srv  llama_server: model loaded") == 125.250125
    assert bench_load.timestamp("....................") is None


def test_gb_per_s_is_the_file_size_over_the_load_time():
    row = bench_load.row_from("q4", "none", "cold", SMOLLM2_BYTES, REAL_LOG, 45)
    assert row.load_s == 0.860507
    assert row.model_gb == 0.098
    assert row.gb_per_s == round(SMOLLM2_BYTES / 1e9 / 0.860507, 3)
    assert (row.mode_logged, row.cache, row.expected_cold_s, row.why) == ("none", "cold", 45, {})


def test_a_load_that_never_finished_says_why_and_has_no_speed():
    lines = REAL_LOG.splitlines()[:3] + ["KITTY-LOAD exited before it loaded"]
    row = bench_load.row_from("q4", "mmap", "warm", SMOLLM2_BYTES, "\n".join(lines), None)
    assert row.load_s is None and row.gb_per_s is None
    assert row.why["load_s"] == "the server did not log 'model loaded' (exited before it loaded)"


def test_a_refused_mlock_is_reported_beside_its_speed():
    row = bench_load.row_from("q4", "mlock", "warm", SMOLLM2_BYTES, REAL_LOG + MLOCK_REFUSED + "\n", None)
    assert row.gb_per_s is not None
    assert row.why["mlock"].startswith("mlock refused")


def test_the_fastest_mode_is_named_per_server_in_the_table():
    rows = [
        bench_load.LoadRow("f16", "mmap", "cold", 141.2, 193.4, 0.73, "mmap", 330),
        bench_load.LoadRow("f16", "none", "cold", 141.2, 22.06, 6.4, "none", 330),
        bench_load.LoadRow("q4", "none", "cold", 47.4, None, None, None, 45, {"load_s": "x"}),
    ]
    assert bench_load.fastest(rows) == {"f16": "none"}
    lines = bench_load.table(rows)
    assert lines[0].split() == ["server", "load", "mode", "cache", "model", "GB", "load", "s", "GB/s", "llama.cpp"] + [
        "says",
        "manual:",
        "cold",
        "s",
    ]
    assert lines[2].split() == ["f16", "none", "cold", "141.2", "22.06", "6.4", "none", "330"]
    assert "fastest load mode for f16: none (6.4 GB/s, 22.06 s)" in lines
    assert "fastest load mode for q4: none measured" in lines
    csv_text = bench_load.to_csv(rows)
    assert csv_text.splitlines()[0] == ",".join([*bench_load.COLUMNS, "why"])


def test_the_throwaway_runs_the_servers_own_command_line_on_a_free_loopback_port():
    cfg = config.load(host_data(kitty_servers__q4__host="0.0.0.0", kitty_servers__q4__api_key_file="/etc/k/q4.key"))
    srv = cfg.servers["q4"]
    argv = bench_load.throwaway_argv(cfg, "q4", srv, "mmap+mlock")
    pairs = {argv[i]: argv[i + 1] for i in range(1, len(argv) - 1) if argv[i].startswith("--")}
    assert (pairs["--host"], pairs["--port"], pairs["--load-mode"], pairs["--log-verbosity"]) == (
        "127.0.0.1",
        "0",
        "mmap+mlock",
        "4",
    )
    for flag in ("--host", "--port", "--load-mode", "--log-verbosity"):
        assert argv.count(flag) == 1, flag
    # No key (no client ever asks it), no metrics; the rest as the server runs it.
    assert "--api-key-file" not in argv and "/etc/k/q4.key" not in argv and "--metrics" not in argv
    assert (pairs["--model"], pairs["--ctx-size"], pairs["--n-gpu-layers"]) == (
        f"{cfg.paths.models_dir}/athene-v2-agent/Athene-V2-Agent-Q4_K_M.gguf",
        "16384",
        "999",
    )
    assert "--log-timestamps" in argv and "--log-prefix" in argv


def test_only_the_models_own_files_are_sized_not_the_projector():
    cfg = config.load(DEFAULTS)
    assert bench_load.model_files(cfg, cfg.servers["vision"]) == [
        f"{cfg.paths.models_dir}/gemma-3-27b-it-GGUF/google_gemma-3-27b-it-Q4_K_M.gguf"
    ]
    assert len(bench_load.model_files(cfg, cfg.servers["f16"])) == 4


# --- the host script, for real ------------------------------------------------------------------

SHELLS = [["dash", "-c"], ["busybox", "sh", "-c"], ["bash", "-c"]]
STAND_IN = """#!/bin/sh
# Logs a load like llama-server b11434 (stamped lines), then serves until SIGTERM.
mode=auto
while [ $# -gt 0 ]; do [ "$1" = --load-mode ] && mode=$2; shift; done
echo $$ > "$PIDFILE"
echo "0.00.001.000 I srv    load_model: loading model '/m.gguf'"
echo "0.00.010.000 I load_tensors: loading model tensors, this can take a while... (load_mode = $mode)"
[ "$mode" = mlock ] && echo "0.00.020.000 W warning: failed to mlock 4096-byte buffer: Cannot allocate memory"
[ "$BEHAVE" = die ] && exit 3
[ "$BEHAVE" = hang ] && exec sleep 60
sleep 0.2
echo "0.00.251.000 I srv  llama_server: model loaded"
exec sleep 60
"""


@pytest.fixture
def stand_in(tmp_path):
    path = tmp_path / "llama-server"
    path.write_text(STAND_IN)
    path.chmod(0o755)
    return path


def run(shell, script, tmp_path, behave="load", timeout=30):
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp), "PIDFILE": str(tmp_path / "pid"), "BEHAVE": behave}
    t0 = time.monotonic()
    out = subprocess.run([*shell, script], capture_output=True, text=True, env=env, timeout=timeout)
    return out, time.monotonic() - t0, tmp


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie of a reaped-later child counts as gone.
    return open(f"/proc/{pid}/stat").read().split()[2] == "Z"


@pytest.mark.skipif(not (shutil.which("dash") and shutil.which("busybox")), reason="installed by .ci/setup")
@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_the_script_stops_the_server_by_its_pid_once_loaded_and_keeps_the_load_lines(shell, stand_in, tmp_path):
    argv = [str(stand_in), "--port", "0", "--load-mode", "mlock"]
    out, took, tmp = run(shell, bench_load.load_command(argv, {}, None, 20), tmp_path)
    assert out.returncode == 0, out.stderr
    row = bench_load.row_from("q4", "mlock", "warm", 500_000_000, out.stdout, None)
    assert (row.load_s, row.mode_logged, row.gb_per_s) == (0.25, "mlock", 2.0)
    assert "mlock" in row.why
    assert gone(int((tmp_path / "pid").read_text())), "the stand-in still runs"
    assert list(tmp.iterdir()) == [], "the log was left behind"
    assert took < 10, "it waited for the server to end by itself"


@pytest.mark.skipif(not (shutil.which("dash") and shutil.which("busybox")), reason="installed by .ci/setup")
@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_a_server_that_dies_or_hangs_is_reported_and_never_left_running(shell, stand_in, tmp_path):
    argv = [str(stand_in), "--load-mode", "dio"]
    died, _, _ = run(shell, bench_load.load_command(argv, {}, None, 20), tmp_path, behave="die")
    assert "KITTY-LOAD exited before it loaded" in died.stdout
    hung, took, tmp = run(shell, bench_load.load_command(argv, {}, None, 1), tmp_path, behave="hang")
    assert "KITTY-LOAD not loaded within 1 s" in hung.stdout
    assert gone(int((tmp_path / "pid").read_text())) and list(tmp.iterdir()) == []
    row = bench_load.row_from("q4", "dio", "warm", 1, hung.stdout, None)
    assert row.load_s is None and "not loaded within 1 s" in row.why["load_s"]


@pytest.mark.skipif(not shutil.which("dash"), reason="installed by .ci/setup")
def test_the_size_script_sums_the_files_and_says_when_one_is_missing(tmp_path):
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"x" * 1000)
    b.write_bytes(b"y" * 234)
    both = subprocess.run(["dash", "-c", bench_load.size_command([str(a), str(b)])], capture_output=True, text=True)
    assert both.stdout.split() == ["1234"]
    missing = subprocess.run(
        ["dash", "-c", bench_load.size_command([str(a), str(tmp_path / "no.gguf")])], capture_output=True, text=True
    )
    assert missing.stdout.split()[-1] == "missing"


@pytest.mark.skipif(not shutil.which("dash"), reason="installed by .ci/setup")
def test_a_server_that_ignores_sigterm_is_killed_by_its_own_pid(stand_in, tmp_path):
    # An ignored signal stays ignored across exec: the stand-in's sleep never ends by SIGTERM.
    argv = ["sh", "-c", f"trap '' TERM; exec {stand_in} --load-mode none"]
    out, took, tmp = run(["dash", "-c"], bench_load.load_command(argv, {}, None, 20), tmp_path)
    assert bench_load.row_from("q4", "none", "warm", 1, out.stdout, None).load_s == 0.25
    assert gone(int((tmp_path / "pid").read_text())) and list(tmp.iterdir()) == []
    assert 9 < took < 20, took
