"""The smoke test of a new llama.cpp build (templates/llama-smoke.sh), run for real under dash, busybox sh and bash.

A stand-in llama-server (Python, below) behaves as the real one at b11434 does in each case the
script must tell apart: it loads, names its port ("listening on ..."), answers /completion, and
prints llama.cpp's own load lines; or it dies by a signal on its first completion, aborts, hangs
while loading, exits with an error, or computes on the CPU although the build has a GPU backend.
The real llama-server and the tiny model are proven by tests/e2e/test_llamacpp_builds.py.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.unit.test_host_scripts import SHELLS, TEMPLATES, needs_shells, run, userland  # noqa: F401

SMOKE = TEMPLATES / "llama-smoke.sh"

STUB = r"""#!/usr/bin/python3
import json, os, signal, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer

mode = os.environ.get("STUB_MODE", "ok")
with open(os.environ["STUB_PID_FILE"], "w") as f:
    f.write(str(os.getpid()))
args = sys.argv[1:]
print("stub llama-server", " ".join(args), "env", os.environ.get("STUB_SEEN", "-"), flush=True)
assert args[args.index("--host") + 1] == "127.0.0.1" and args[args.index("--port") + 1] == "0"
if mode == "exit":
    print("llama_model_load: error loading model: tensor 'output.weight' has wrong shape", flush=True)
    sys.exit(1)
if mode == "hang":
    time.sleep(600)
if mode != "cpu" and os.environ.get("STUB_GPU"):
    print("llama_model_load_from_file_impl: using device CUDA0 (Stub GPU) (0000:00:00.0) - 1000 MiB free")
    layers = min(int(args[args.index("--n-gpu-layers") + 1]), 7)
    print(f"load_tensors: offloaded {layers}/7 layers to GPU", flush=True)

class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        if mode == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        if mode == "abort":
            print("/src/ggml/src/ggml-cpu/ggml-cpu.c:1234: GGML_ABORT failed", flush=True)
            os.abort()
        body = json.dumps({"content": "xyz", "tokens_predicted": 0 if mode == "empty" else 8}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", 0), Handler)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print(f"main: server is listening on http://127.0.0.1:{server.server_port}", flush=True)
server.serve_forever()
"""


@pytest.fixture
def build(tmp_path) -> Path:
    """A build folder whose llama-server is the stand-in."""
    folder = tmp_path / "builds" / "b1-cpu-0123456789"
    (folder / "bin").mkdir(parents=True)
    server = folder / "bin" / "llama-server"
    server.write_text(STUB)
    server.chmod(0o755)
    return folder


def smoke(shell, userland, build, mode="ok", *, backend="cpu", cpu="portable", gpu_layers=0, timeout=30, gpu=False):  # noqa: F811
    log = build.parent.parent / "logs" / "smoke.log"
    pid_file = build.parent.parent / "stub.pid"
    env = [f"STUB_MODE={mode}", f"STUB_PID_FILE={pid_file}", "STUB_SEEN=from-the-servers-env"]
    env += ["STUB_GPU=1"] if gpu else []
    argv = [str(SMOKE), str(build), "/models/kitty-smoke-v1.gguf", str(log), str(gpu_layers), backend, cpu]
    result = run(shell, userland, [*argv, str(timeout), *env], timeout=timeout + 30)
    return result, log, pid_file


def stopped(pid_file: Path) -> bool:
    """The stand-in server the script started is gone (it stops what it started, by PID)."""
    pid = int(pid_file.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_a_build_that_serves_is_proven_and_its_server_stopped(shell, userland, build):  # noqa: F811
    result, log, pid_file = smoke(shell, userland, build)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[llama.cpp b1-cpu-0123456789] proven in" in result.stdout
    proof = json.loads((build / "smoke.json").read_text())
    assert proof["tokens"] == 8 and proof["offloaded"] == "cpu" and proof["model"] == "kitty-smoke-v1.gguf"
    # The servers' environment reached it.
    assert "env from-the-servers-env" in log.read_text()
    assert stopped(pid_file)


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_a_native_build_that_crashes_on_its_first_token_is_refused_with_the_remedy(shell, userland, build):  # noqa: F811
    (build / "smoke.json").write_text("{}")  # a proof from before must not survive a failed run
    result, _, pid_file = smoke(shell, userland, build, "segv", cpu="native")
    assert result.returncode == 1
    assert "REFUSED: this build does not compute on this host" in result.stdout
    assert "llama-server ended during its first completion: signal SIGSEGV (exit 139)" in result.stdout
    assert "try a portable CPU build (kitty_llamacpp.cpu: portable)" in result.stdout
    assert "main: server is listening on" in result.stdout  # the log's tail
    assert not (build / "smoke.json").exists()
    assert stopped(pid_file)


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_an_abort_names_llama_cpp_and_another_ref(shell, userland, build):  # noqa: F811
    result, _, _ = smoke(shell, userland, build, "abort")
    assert result.returncode == 1
    assert "signal SIGABRT (exit 134)" in result.stdout and "GGML_ABORT failed" in result.stdout
    assert "llama.cpp aborted" in result.stdout and "try another kitty_llamacpp.ref" in result.stdout
    assert not (build / "smoke.json").exists()


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_a_build_that_hangs_is_refused_at_the_timeout_and_stopped(shell, userland, build):  # noqa: F811
    started = time.monotonic()
    result, _, pid_file = smoke(shell, userland, build, "hang", timeout=2)
    assert result.returncode == 1
    assert "no model loaded within 2s (hangs)" in result.stdout
    assert time.monotonic() - started < 20
    assert stopped(pid_file)


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_a_server_that_exits_shows_its_error(shell, userland, build):  # noqa: F811
    result, _, _ = smoke(shell, userland, build, "exit")
    assert result.returncode == 1
    assert "ended while loading the model: exit 1" in result.stdout
    assert "error loading model: tensor 'output.weight' has wrong shape" in result.stdout


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_an_answer_without_tokens_is_refused(shell, userland, build):  # noqa: F811
    result, _, pid_file = smoke(shell, userland, build, "empty")
    assert result.returncode == 1 and "the completion held no tokens" in result.stdout
    assert stopped(pid_file)


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_a_gpu_build_must_put_the_layers_on_the_gpu(shell, userland, build):  # noqa: F811
    on_gpu, _, _ = smoke(shell, userland, build, backend="cuda", gpu_layers=999, gpu=True)
    assert on_gpu.returncode == 0, on_gpu.stdout
    assert json.loads((build / "smoke.json").read_text())["offloaded"] == "7/7"
    assert "layers on CUDA0 (Stub GPU) (7/7)" in on_gpu.stdout

    fell_back, _, pid_file = smoke(shell, userland, build, "cpu", backend="cuda", gpu_layers=999, gpu=True)
    assert fell_back.returncode == 1
    assert (
        "the build has the cuda backend but computed on the CPU (asked for 999 GPU layers, offloaded none)"
        in fell_back.stdout
    )
    assert "likely cause: CUDA found no usable GPU for this process" in fell_back.stdout
    assert not (build / "smoke.json").exists()
    assert stopped(pid_file)


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_a_cpu_build_is_not_asked_for_a_gpu(shell, userland, build):  # noqa: F811
    # The servers ask for GPU layers, the build has no GPU backend: nothing to check (issue: GPU builds only).
    result, _, _ = smoke(shell, userland, build, backend="cpu", gpu_layers=999)
    assert result.returncode == 0, result.stdout
