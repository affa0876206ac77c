"""The manual's end-to-end query on a real sandbox host: through the brain to a model server, with its key.

The brain runs on the engine's bridge network, beside the sandbox; the model
servers listen on the docker0 address it reaches (sandbox/group_data), so
each has an API key the deploy made on the controller (tasks/api_keys.py).
Proves: the health table calls the brain healthy (not degraded); the host
suite's /api/query is answered by the tiny model; a request without the key
is refused; the key is in no output; a brain that cannot reach its model
server fails the converge as degraded, naming the dependency, and the next
converge puts it back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from sandbox import converge as sandbox_converge
from tasks import api_keys

from .conftest import ROOT, converge, sandbox_config, sandbox_data

pytestmark = pytest.mark.e2e


def brain_line(output: str) -> str:
    lines = [line for line in output.splitlines() if re.search(r"stack brain\s+\d+\s", line)]
    assert lines, f"no health table line for the brain:\n{output[-3000:]}"
    return lines[-1]


def host_suite(name: str, *args: str) -> subprocess.CompletedProcess:
    """tests/host against the sandbox over SSH, as sandbox/converge.py runs it after the main job's converge."""
    env = sandbox_converge.sandbox_env(name)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(ROOT / "tests" / "host"),
        f"--hosts=paramiko://{env['KITTY_HOSTS'].split(',')[0]}",
        f"--ssh-identity-file={env['KITTY_SSH_KEY']}",
        *args,
    ]
    environment = {**os.environ, "KITTY_GROUP_DATA": str(sandbox_converge.GROUP_DATA)}
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)


def test_the_brain_is_healthy_not_degraded(first_converge):
    line = brain_line(first_converge.output)
    assert " healthy " in f"{line} " and "degraded" not in line, line


def test_the_query_is_answered_by_the_tiny_model_through_the_brain(first_converge, sandbox):
    cfg = sandbox_config()
    assert cfg.verify.query, "sandbox/group_data turns kitty_verify.query on"
    # The whole suite, as the main job ends: the servers' own checks read /v1/* with the key too.
    suite = host_suite(sandbox, "-rA")
    assert suite.returncode == 0, suite.stdout[-3000:]
    assert "PASSED tests/host/test_app_stack.py::test_end_to_end_query_through_the_brain" in suite.stdout
    # And from here, on the brain's published port: the answer is the model's text.
    port = cfg.stack.services["brain"].port
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/query",
        data=json.dumps({"query": "Say hello.", "userId": "e2e"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        answer = json.load(reply)
    assert answer["response"].strip() and answer["model"], answer


def test_the_model_server_refuses_a_request_without_its_key(first_converge):
    q4 = sandbox_config().servers["q4"]
    assert q4.host != "127.0.0.1" and q4.api_key_file
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}).encode()
    url = f"http://{q4.host}:{q4.port}/v1/chat/completions"
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 401
    key = api_keys.controller_key("q4")
    request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=60) as reply:
        assert reply.status == 200
    assert key not in first_converge.output


def test_a_degraded_brain_fails_the_converge_naming_why(first_converge, sandbox, tmp_path):
    stack = sandbox_data()["kitty_stack"]
    # The containers' own loopback: nothing listens there, the brain's Q4 dependency fails.
    stack["model_host"] = "127.0.0.1"
    try:
        broken = converge(sandbox, tmp_path, overrides={"kitty_stack": stack})
        assert broken.code != 0, broken.output[-3000:]
        line = brain_line(broken.output)
        assert "degraded: llamacpp_q4" in line, line
        assert re.search(r"stack brain \(port \d+, degraded: llamacpp_q4 \(", broken.output), broken.output[-3000:]
    finally:
        back = converge(sandbox)
    assert back.code == 0, back.output[-3000:]
    assert " healthy " in f"{brain_line(back.output)} "
