"""The benchmark's parsing and reporting, and its host-side timing loop run for real under dash, busybox and bash."""

from __future__ import annotations

import csv
import http.server
import io
import json
import shutil
import subprocess
import threading

import pytest

from tasks.runbook import bench

METAL_LOAD = [
    "llama_model_loader: loaded meta data with 33 key-value pairs",
    "load_tensors: offloaded 81/81 layers to GPU",
    "load_tensors:   CPU_Mapped model buffer size =   417.66 MiB",
    "load_tensors: Metal_Mapped model buffer size = 45000.00 MiB",
    "llama_kv_cache:      Metal KV buffer size =  5120.00 MiB",
    "llama_context:      Metal compute buffer size =  1024.00 MiB",
    "llama_context:        CPU compute buffer size =    40.01 MiB",
]
CPU_LOAD = [
    "llama_model_loader: loaded meta data",
    "load_tensors:   CPU_Mapped model buffer size =    93.80 MiB",
    "llama_kv_cache:        CPU KV buffer size =    90.00 MiB",
]


def test_timings_come_from_llama_servers_own_answer():
    body = json.dumps({"content": "x", "timings": {"prompt_per_second": 812.5, "predicted_per_second": 61.2}})
    assert bench.timings(body) == (812.5, 61.2)
    assert bench.timings("<html>502</html>") == (None, None)


def test_gpu_memory_is_the_sum_of_gpu_buffers_of_the_load_and_none_on_a_cpu_build():
    assert bench.gpu_gib_from_log(METAL_LOAD) == round((45000 + 5120 + 1024) / 1024, 3)
    assert bench.gpu_gib_from_log(CPU_LOAD) is None


def test_a_row_without_manual_figures_says_why_and_every_none_cell_is_explained_in_csv():
    row = bench.new_row("summary", "hermes-summary")
    row.why["cold_s"] = "not restarted"
    assert row.expected_cold_s is None and "expected" in row.why
    q4 = bench.new_row("q4", "athene")
    q4.cold_s, q4.warm_s, q4.prompt_tps, q4.gen_tps, q4.rss_gb = 41.0, 29.5, 300.0, 20.0, 17.2
    rows = list(csv.DictReader(io.StringIO(bench.to_csv([q4, row]))))
    assert rows[0]["expected_cold_s"] == "45" and rows[0]["cold_s"] == "41.0"
    assert rows[1]["cold_s"] == "" and "cold_s: not restarted" in rows[1]["why"]
    lines = bench.table([q4, row])
    assert lines[1].startswith("q4") and "45/30, 18/16" in lines[1]
    assert len(lines) == 3


def test_json_and_csv_are_written_per_host(tmp_path):
    row = bench.new_row("q4", "m")
    json_path, csv_path = bench.write([row], str(tmp_path), "@ssh/127.0.0.1", {"restarted": False})
    assert json_path.name == "bench-ssh_127.0.0.1.json"
    data = json.loads(json_path.read_text())
    assert data["restarted"] is False and data["servers"][0]["server"] == "q4"
    assert csv_path.read_text().startswith("server,model,cold_s")


class _Slow(http.server.BaseHTTPRequestHandler):
    # 503 for the first requests, as llama-server answers while it loads the model.
    answered = 0

    def do_GET(self):  # noqa: N802 - http.server's name
        type(self).answered += 1
        self.send_response(200 if type(self).answered > 3 else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


SHELLS = [["dash", "-c"], ["busybox", "sh", "-c"], ["bash", "-c"]]


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_time_to_healthy_waits_through_503_and_gives_up_at_its_timeout(shell):
    if not shutil.which(shell[0]) or not shutil.which("curl") or not shutil.which("perl"):
        pytest.skip(f"{shell[0]}, curl or perl missing")
    _Slow.answered = 0
    server = http.server.HTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/health"
        out = subprocess.run([*shell, bench.time_to_healthy(url, 20)], capture_output=True, text=True, timeout=30)
        assert out.stdout.strip().isdigit() and _Slow.answered == 4, out
    finally:
        server.shutdown()
    dead = subprocess.run([*shell, bench.time_to_healthy(url, 1)], capture_output=True, text=True, timeout=30)
    assert dead.stdout.strip() == "timeout"


def test_the_table_is_followed_by_why_each_empty_cell_is_empty():
    row = bench.new_row("summary", "m")
    row.why["cold_s"] = "n/a: this host does not let the page cache be dropped"
    assert bench.notes([row]) == [
        "  summary expected: the manual gives no figures for a server named 'summary'",
        "  summary cold_s: n/a: this host does not let the page cache be dropped",
    ]


def test_no_gpu_is_an_explicit_reason_not_a_zero():
    assert bench.no_gpu_reason("cpu", 999) == "n/a: no GPU (llama.cpp built for the CPU backend)"
    assert bench.no_gpu_reason("metal", 0) == "n/a: no GPU (n_gpu_layers is 0)"
    assert bench.no_gpu_reason("metal", 999) is None


def test_cuda_memory_is_nvidia_smis_figure_for_the_servers_pid():
    listed = "4242, 15360\n77, 512\n4242, 1024\n"
    assert bench.gpu_mib_from_nvidia_smi(listed, 4242) == 16384
    assert bench.gpu_mib_from_nvidia_smi(listed, 5) is None
    assert bench.gpu_mib_from_nvidia_smi("No devices were found", 4242) is None


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_the_clock_starts_before_the_restart_and_a_failed_restart_says_so(shell):
    if not shutil.which(shell[0]) or not shutil.which("curl") or not shutil.which("perl"):
        pytest.skip(f"{shell[0]}, curl or perl missing")
    _Slow.answered = 3
    server = http.server.HTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/health"
        slow = subprocess.run([*shell, bench.time_to_healthy(url, 20, "sleep 0.5")], capture_output=True, text=True)
        assert int(slow.stdout.strip()) >= 500, slow
        failed = subprocess.run([*shell, bench.time_to_healthy(url, 20, "false")], capture_output=True, text=True)
        assert failed.stdout.strip() == "start failed"
    finally:
        server.shutdown()
