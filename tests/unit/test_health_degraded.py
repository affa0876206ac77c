"""Health that means health: a service that answers but says it is degraded is not healthy.

The probe command (tasks/runbook/verify.py) really runs here under sh, dash and busybox
sh against HTTP servers on this machine's loopback: a brain that answers 200
with `"status": "degraded"`, one that is well, and a /props that answers only
with the API key (as llama-server does with --api-key-file).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading

import pytest

from tasks import config
from tasks.app import secrets
from tasks.inference import api_keys
from tasks.runbook import verify
from tests.plan import hosts

KEY = "sandbox-test-key-0123456789"
DEGRADED = {
    "status": "degraded",
    "dependencies": {
        "redis": {"ok": True, "url": "redis://redis:6379/0"},
        "llamacpp_q4": {"ok": False, "url": "http://host.docker.internal:8083", "error": "Connection refused"},
    },
}
WELL = {"status": "ok", "dependencies": {"redis": {"ok": True}, "llamacpp_q4": {"ok": True, "status": "ok"}}}
PROPS = {"model_path": "/m/q4.gguf", "model_alias": "kitty-q4", "default_generation_settings": {"n_ctx": 2048}}


class Answers(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/degraded/health":
            code, body = 200, DEGRADED
        elif self.path == "/well/health":
            code, body = 200, WELL
        elif self.path == "/health":
            code, body = 200, {"status": "ok"}
        elif self.path == "/props":
            authorized = self.headers.get("Authorization") == f"Bearer {KEY}"
            code, body = (200, PROPS) if authorized else (401, {"error": {"message": "Invalid API Key"}})
        else:
            code, body = 404, {}
        data = json.dumps(body, indent=2).encode()  # several lines: the probe keeps it on one
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def port():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def shells():
    found = [["sh", "-c"]]
    if shutil.which("dash"):
        found.append(["dash", "-c"])
    if shutil.which("busybox"):
        found.append(["busybox", "sh", "-c"])
    return found


def table(port, tmp_path, shell, *, optional=False, key_file=None):
    declared = verify.Declared(f"http://127.0.0.1:{port}/props", "/m/q4.gguf", "kitty-q4", 2048, key_file)
    base = f"http://127.0.0.1:{port}"
    checks = [
        verify.Check("server", "q4", port, "llama", f"http://127.0.0.1:{port}/health", "q4 log", declared),
        verify.Check("stack", "brain", port, "http", f"{base}/degraded/health", "logs", optional=optional),
        verify.Check("stack", "api", port, "http", f"http://127.0.0.1:{port}/well/health", "logs"),
    ]
    command = verify.probe_command(checks)
    out = subprocess.run([*shell, command], capture_output=True, text=True, timeout=60, env={**os.environ})
    assert out.returncode == 0, out.stderr
    facts = verify.ServiceHealth().process(out.stdout.splitlines())
    props = {**facts["props"], **facts["bodies"]}
    return [verify.assess(c, facts.get(c.label), props.get(c.label)) for c in checks], command


@pytest.mark.parametrize("shell", shells(), ids=lambda s: s[0])
def test_a_service_that_says_it_is_degraded_is_not_healthy_and_says_why(port, tmp_path, shell):
    rows, _ = table(port, tmp_path, shell)
    states = {row.check.label: row.state for row in rows}
    assert states["stack brain"] == "degraded: llamacpp_q4 (Connection refused)"
    assert states["stack api"] == "healthy"
    message = verify.failure_message(rows)
    assert "stack brain (port" in message and "degraded: llamacpp_q4 (Connection refused)" in message
    assert "stack api" not in message


def test_an_optional_service_that_is_degraded_is_shown_but_does_not_fail(port, tmp_path):
    rows, _ = table(port, tmp_path, ["sh", "-c"], optional=True)
    assert any(row.state.startswith("degraded:") for row in rows)
    assert verify.failure_message(rows) is None


def test_an_optional_service_that_is_down_still_fails():
    row = verify.Row(verify.Check("stack", "brain", 1, "http", "u", "w", optional=True), "down", None)
    assert verify.failure_message([row])


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"status": "ok"}, None),
        ({"status": "healthy", "checks": {"db": {"healthy": True}}}, None),
        ({"status": "DOWN"}, "down: no reason given"),
        ({"status": "ok", "checks": {"db": {"status": "failing"}}}, "degraded: db (failing)"),
        ({"status": "ok", "dependencies": {"q4": {"ok": False}}}, "degraded: q4"),
    ],
)
def test_the_reason_names_each_failing_dependency(body, reason):
    assert verify.degraded_reason(body) == reason


def test_props_are_read_with_the_key_which_never_is_in_the_command(port, tmp_path):
    key_file = tmp_path / "q4.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    rows, command = table(port, tmp_path, ["sh", "-c"], key_file=str(key_file))
    (server,) = [row for row in rows if row.check.kind == "server"]
    assert server.state == "healthy" and server.context == "2048 tokens"
    assert KEY not in command
    # A wrong alias behind the key is found: the props were really read.
    declared = verify.Declared(f"http://127.0.0.1:{port}/props", "/m/q4.gguf", "kitty-f16", 2048, str(key_file))
    check = verify.Check("server", "q4", port, "llama", f"http://127.0.0.1:{port}/health", "log", declared)
    out = subprocess.run(["sh", "-c", verify.probe_command([check])], capture_output=True, text=True, timeout=60)
    facts = verify.ServiceHealth().process(out.stdout.splitlines())
    assert "alias: serves 'kitty-q4'" in verify.assess(check, facts.get(check.label), facts["props"]["server q4"]).state


def test_the_controller_key_is_made_once_0600_and_ignored_by_git(tmp_path):
    folder = tmp_path / ".kitty-keys"
    first = api_keys.controller_key("q4", folder)
    assert len(first) >= 40 and api_keys.controller_key("q4", folder) == first
    assert api_keys.controller_key("summary", folder) != first
    assert (folder / "q4.key").stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700
    assert (folder / ".gitignore").read_text().splitlines()[-1] == "*"


def test_the_app_env_gets_each_keyed_servers_key_as_a_secret(tmp_path, monkeypatch):
    monkeypatch.setenv(api_keys.KEYS_DIR_ENV, str(tmp_path / "keys"))
    data = dict(hosts.DEFAULTS)
    data["kitty_servers"] = {**data["kitty_servers"]}
    data["kitty_servers"]["q4"] = {**data["kitty_servers"]["q4"], "host": "10.0.0.5", "api_key_file": "/opt/k/q4.key"}
    cfg = config.load(data)
    keys = api_keys.env_secrets(cfg)
    assert list(keys) == ["LLAMACPP_Q4_API_KEY"]
    text = secrets.render_env(cfg, keys)
    assert f"LLAMACPP_Q4_API_KEY='{keys['LLAMACPP_Q4_API_KEY']}'" in text.split("# Secrets")[1]
