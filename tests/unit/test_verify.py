"""The health table (tasks/runbook/verify.py) and the host suite's checks (tests/host/checks.py), without a host.

The probe command really runs here, under `sh`, against HTTP servers on this
machine's loopback; the macOS checks get simulated `host.run` outputs
(testinfra has no socket or service backend for Darwin).
"""

from __future__ import annotations

import copy
import http.server
import socket
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest

from tasks import config
from tasks.app import compose
from tasks.host.platform import Platform
from tasks.runbook import verify
from tests.host import checks as host_checks
from tests.plan import hosts
from tests.unit.test_launchd_fact import CRASHED, RUNNING

CFG = config.load(hosts.DEFAULTS)
LINUX = Platform(os="linux", arch="x86_64", user="admin", sudo=True)
MAC = Platform(os="macos", arch="arm64", user="admin", sudo=True, brew_prefix="/opt/homebrew")
BOTH = ("inference", "application")


def check(probe="llama", kind="server", name="q4", port=8083, target="http://127.0.0.1:8083/health"):
    return verify.Check(kind, name, port, probe, target, f"logs of {name}")


# --- Reading the probe's answers -------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "state", "latency"),
    [
        ("http 200 0.0042 0", "healthy", 4),
        ("http 503 0.001 0", "loading", None),
        ("http 000 0.0001 7", "down", None),
        ("http 000 5.001 28", "no answer in 5 s", None),
        ("http 500 0.01 0", "http 500", None),
    ],
)
def test_a_llama_server_is_healthy_only_on_200(result, state, latency):
    row = verify.assess(check(), result.split())
    assert (row.state, row.latency_ms, row.healthy) == (state, latency, state == "healthy")


@pytest.mark.parametrize(("code", "healthy"), [("200", True), ("204", True), ("302", True), ("404", False)])
def test_a_stack_http_check_takes_any_2xx_or_3xx(code, healthy):
    row = verify.assess(check("http", "stack", "brain", 8000), ["http", code, "0.012", "0"])
    assert row.healthy is healthy
    assert row.latency_ms == (12 if healthy else None)


def test_command_probes_and_missing_or_garbled_answers():
    probe = check("command", "stack", "redis", 6379, "true")
    assert verify.assess(probe, ["ok", "35"]) == verify.Row(probe, "healthy", 35)
    assert verify.assess(probe, ["failed", "35"]).state == "failed"
    assert verify.assess(probe, None).state == "no answer from the probe"
    assert not verify.assess(probe, ["what"]).healthy


def test_parse_keeps_only_probe_lines():
    lines = ["motd noise", f"{verify.MARK}|server|q4|http 200 0.004 0", f"{verify.MARK}|stack|redis|ok 12", "x|y"]
    assert verify.parse(lines) == {"server q4": ["http", "200", "0.004", "0"], "stack redis": ["ok", "12"]}


def test_the_table_lines_up_and_shows_no_latency_for_an_unhealthy_service():
    rows = [
        verify.Row(check(), "healthy", 4),
        verify.Row(check(name="summary", port=8085), "down", None),
        verify.Row(check("command", "stack", "voice", None, "true"), "healthy", 120),
    ]
    assert verify.render(rows) == [
        "service         port  state    latency  per request",
        "server q4       8083  healthy     4 ms  -",
        "server summary  8085  down           -  -",
        "stack voice     -     healthy   120 ms  -",
    ]


# --- /props: the running server matches its declaration ------------------------------------------

DECLARED = verify.Declared("http://127.0.0.1:8085/props", "/m/smol.gguf", "kitty-summary", 1024)
PROPS = {"model_path": "/m/smol.gguf", "model_alias": "kitty-summary", "default_generation_settings": {"n_ctx": 1024}}


def server_check(declared=DECLARED):
    return verify.Check("server", "summary", 8085, "llama", "http://127.0.0.1:8085/health", "logs", declared)


def test_a_server_serving_what_was_declared_is_healthy_and_shows_its_context_per_request():
    row = verify.assess(server_check(), ["http", "200", "0.004", "0"], PROPS)
    assert (row.state, row.context) == ("healthy", "1024 tokens")


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        ({"model_path": "/m/other.gguf"}, "model: serves /m/other.gguf, declared /m/smol.gguf"),
        ({"model_alias": "by-hand"}, "alias: serves 'by-hand', declared 'kitty-summary'"),
        ({"default_generation_settings": {"n_ctx": 256}}, "ctx_size: serves 256 tokens per request, declared 1024"),
    ],
)
def test_a_server_serving_other_settings_is_not_healthy_and_the_field_is_named(changed, named):
    row = verify.assess(server_check(), ["http", "200", "0.004", "0"], {**PROPS, **changed})
    assert not row.healthy
    assert named in row.state
    assert named in verify.failure_message([row])


def test_the_declared_context_is_split_over_slots_unless_kv_unified():
    data = copy.deepcopy(hosts.DEFAULTS)
    data["kitty_servers"]["q4"].update(ctx_size=16384, parallel=4)
    data["kitty_servers"]["f16"].update(ctx_size=16384, parallel=4, kv_unified=True)
    found = {c.name: c.declared for c in verify.checks(config.load(data), LINUX, ("inference",))}
    assert found["q4"].ctx_per_request == 4096
    assert found["f16"].ctx_per_request == 16384
    assert found["q4"].props_url == "http://127.0.0.1:8083/props"


def test_props_lines_are_read_apart_from_the_health_lines():
    body = '{"model_path": "/m/a|b.gguf", "default_generation_settings": {"n_ctx": 7}}'
    lines = [
        f"{verify.MARK}|server|q4|http 200 0.004 0",
        f"{verify.PROPS_MARK}|server|q4|{body}",
        f"{verify.PROPS_MARK}|server|x|",
    ]
    assert verify.parse(lines) == {"server q4": ["http", "200", "0.004", "0"]}
    assert verify.parse_props(lines) == {
        "server q4": {"model_path": "/m/a|b.gguf", "default_generation_settings": {"n_ctx": 7}}
    }


def test_the_failure_names_each_unhealthy_service_its_port_and_where_to_look():
    rows = [verify.Row(check(), "healthy", 4), verify.Row(check(name="summary", port=8085), "loading", None)]
    assert (
        verify.failure_message(rows)
        == "1 of 2 not healthy:\n  server summary (port 8085, loading): look at logs of summary"
    )
    assert verify.failure_message(rows[:1]) is None


# --- The probe itself, run for real ------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/slow":
            time.sleep(2.5)
        code = {"/health": 200, "/loading": 503, "/slow": 200}.get(self.path, 404)
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def web():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_probe_command_reports_every_state_from_a_real_shell(web, monkeypatch):
    monkeypatch.setattr(verify, "HTTP_TIMEOUT", 1)
    down = closed_port()
    probes = [
        check(name="ok", target=f"http://127.0.0.1:{web}/health"),
        check(name="loading", target=f"http://127.0.0.1:{web}/loading"),
        check(name="hung", target=f"http://127.0.0.1:{web}/slow"),
        check(name="stopped", port=down, target=f"http://127.0.0.1:{down}/health"),
        check("http", "stack", "brain", web, f"http://127.0.0.1:{web}/missing"),
        check("command", "stack", "redis", None, "echo PONG | grep -qx PONG"),
        check("command", "stack", "postgres", None, "exit 3"),
    ]
    result = subprocess.run(["sh", "-c", verify.probe_command(probes)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    found = verify.parse(result.stdout.splitlines())
    states = {probe.label: verify.assess(probe, found.get(probe.label)).state for probe in probes}
    assert states == {
        "server ok": "healthy",
        "server loading": "loading",
        "server hung": "no answer in 1 s",
        "server stopped": "down",
        "stack brain": "http 404",
        "stack redis": "healthy",
        "stack postgres": "failed",
    }
    assert verify.assess(probes[0], found["server ok"]).latency_ms is not None


# --- What is checked, per platform and role ---------------------------------------------------


def test_linux_checks_point_at_the_log_and_journalctl():
    (q4,) = [c for c in verify.checks(CFG, LINUX, ("inference",)) if c.name == "q4"]
    assert (q4.kind, q4.port, q4.probe, q4.target) == ("server", 8083, "llama", "http://127.0.0.1:8083/health")
    assert q4.where == f"{CFG.paths.logs_dir}/llamacpp-q4.log, journalctl -u kitty-llama-q4.service"


def test_macos_checks_point_at_the_log_and_launchctl():
    (q4,) = [c for c in verify.checks(CFG, MAC, ("inference",)) if c.name == "q4"]
    assert q4.where == f"{CFG.paths.logs_dir}/llamacpp-q4.log, sudo launchctl print system/com.kitty.llama-server.q4"


def test_every_enabled_server_and_stack_service_is_checked_once():
    found = verify.checks(CFG, MAC, BOTH, compose="docker-compose -p kitty")
    assert [c.label for c in found] == [f"server {n}" for n in CFG.enabled_servers()] + [
        f"stack {n}" for n in CFG.stack.services
    ]
    by_name = {c.name: c for c in found}
    assert by_name["brain"].probe == "http" and by_name["brain"].target == "http://127.0.0.1:8000/health"
    assert by_name["redis"].target == compose._probe("docker-compose -p kitty", "redis", 6379, "redis")
    assert by_name["redis"].where == "docker-compose -p kitty logs redis"
    assert by_name["voice"].probe == "command" and "docker inspect" in by_name["voice"].target


def test_a_disabled_server_a_disabled_stack_and_a_missing_role_are_not_checked():
    data = copy.deepcopy(hosts.DEFAULTS)
    data["kitty_servers"]["vision"]["enabled"] = False
    data["kitty_stack"]["enabled"] = False
    cfg = config.load(data)
    assert [c.name for c in verify.checks(cfg, LINUX, BOTH)] == ["q4", "f16", "summary"]
    assert [c.kind for c in verify.checks(CFG, LINUX, ("application",))] == ["stack"] * len(CFG.stack.services)
    assert verify.checks(CFG, LINUX, ()) == []


# --- The end-to-end query switch ------------------------------------------------------------


def test_the_end_to_end_query_is_off_by_default():
    assert CFG.verify.query is False


def test_the_end_to_end_query_needs_a_stack_service_with_a_port():
    data = copy.deepcopy(hosts.DEFAULTS)
    data["kitty_verify"] = {"query": True, "query_service": "voice"}
    with pytest.raises(config.ConfigError, match="kitty_verify.query: .*kitty_stack.services.voice with a port"):
        config.load(data)
    data["kitty_verify"] = {"query": True}
    assert config.load(data).verify.query_service == "brain"
    data["kitty_stack"]["enabled"] = False
    with pytest.raises(config.ConfigError, match="kitty_stack enabled"):
        config.load(data)


# --- The host suite's checks on a simulated Mac --------------------------------------------------


class FakeHost:
    """testinfra's `host` as far as the checks use it: `run` answers by substring, first match wins."""

    def __init__(self, answers=(), system="darwin"):
        self.system_info = SimpleNamespace(type=system, arch="arm64")
        self.answers = list(answers)
        self.ran: list[str] = []

    def run(self, command):
        self.ran.append(command)
        for key, (rc, stdout) in self.answers:
            if key in command:
                return SimpleNamespace(rc=rc, stdout=stdout, stderr="")
        return SimpleNamespace(rc=1, stdout="", stderr="not scripted")

    def check_output(self, command):
        return self.run(command).stdout

    @property
    def socket(self):
        if self.system_info.type == "darwin":
            raise NotImplementedError("testinfra has no socket backend for Darwin")
        return SimpleNamespace(get_listening_sockets=lambda: ["tcp://127.0.0.1:8083", "tcp://0.0.0.0:22"])


LSOF = (
    "COMMAND   PID  USER   FD   TYPE DEVICE SIZE/OFF NODE NAME\n"
    "llama-ser 4242 admin 3u IPv4 0x1 0t0 TCP 127.0.0.1:8083 (LISTEN)\n"
)


def test_macos_listening_asks_lsof_not_the_socket_backend():
    mac = FakeHost([("lsof -nP -iTCP:8083 -sTCP:LISTEN", (0, LSOF))])
    assert host_checks.listening(mac, 8083) is None
    assert host_checks.listening(mac, 8085) == "nothing listens on TCP port 8085"
    assert "sudo -n lsof -nP -iTCP:8085 -sTCP:LISTEN" in mac.ran[-1]


def test_linux_listening_uses_the_socket_backend():
    linux = FakeHost(system="linux")
    assert host_checks.listening(linux, 8083) is None
    assert host_checks.listening(linux, 8085) == "nothing listens on TCP port 8085"
    assert linux.ran == []


def test_macos_job_checks_ask_launchctl_print_in_the_system_domain():
    target = "system/com.kitty.llama-server.q4"
    mac = FakeHost(
        [(f"launchctl print {target}", (0, "\n".join(RUNNING))), ("ps -o etime= -p 4242", (0, " 01:02:03\n"))]
    )
    assert host_checks.supervisor_job(mac, CFG, "q4") is None
    assert any(f"launchctl print {target}" in command for command in mac.ran)


def test_macos_job_not_loaded_or_not_running_is_named():
    target = "system/com.kitty.llama-server.q4"
    missing = 'Could not find service "com.kitty.llama-server.q4" in domain for system'
    assert "is not loaded" in host_checks.launchd_problem(target, 113, missing, "")
    problem = host_checks.launchd_problem(target, 0, "\n".join(CRASHED), "")
    assert problem == f"{target} is spawn scheduled (last exit code 1, 12 runs)"


def test_macos_job_that_crashed_recently_is_a_crash_loop_but_not_after_a_while():
    target = "system/com.kitty.llama-server.q4"
    restarted = "\n".join(line.replace("last exit code = (never exited)", "last exit code = 1") for line in RUNNING)
    assert "crash-looping: last exit code 1" in host_checks.launchd_problem(target, 0, restarted, "00:42")
    assert host_checks.launchd_problem(target, 0, restarted, "2-03:04:05") is None
    # A clean exit (a kickstart) is no crash.
    clean = restarted.replace("last exit code = 1", "last exit code = 0")
    assert host_checks.launchd_problem(target, 0, clean, "00:05") is None


@pytest.mark.parametrize(("etime", "seconds"), [("00:42", 42), ("01:02:03", 3723), ("2-00:00:01", 172801), ("", None)])
def test_ps_elapsed_time(etime, seconds):
    assert host_checks._etime_seconds(etime) == seconds


def show(active="active", sub="running", restarts=0, since_s=100.0, uptime_s=1000.0, load="loaded"):
    fields = [
        f"LoadState={load}",
        f"ActiveState={active}",
        f"SubState={sub}",
        f"NRestarts={restarts}",
        "Result=success",
    ]
    fields.append(f"ActiveEnterTimestampMonotonic={int(since_s * 1e6)}")
    return "\n".join([*fields, f"{uptime_s} 10.0"])


def test_systemd_job_states():
    unit = "kitty-llama-q4.service"
    assert host_checks.systemd_problem(unit, show()) is None
    assert host_checks.systemd_problem(unit, show("inactive", "dead")) == (
        f"{unit} is inactive/dead (result success, 0 automatic restarts)"
    )
    assert "auto-restart" in host_checks.systemd_problem(unit, show("activating", "auto-restart", restarts=5))
    assert "crash-looping: restarted 3 times, up for only 20 s" in host_checks.systemd_problem(
        unit, show(restarts=3, since_s=980)
    )
    # Restarted once long ago and up since: no loop.
    assert host_checks.systemd_problem(unit, show(restarts=1, since_s=100, uptime_s=100_000)) is None
    assert "not installed" in host_checks.systemd_problem(unit, show(load="not-found"))


MODELS = (
    '{"models":[{"name":"kitty-q4","model":"kitty-q4"}],"object":"list","data":[{"id":"kitty-q4","object":"model"}]}'
)


def test_the_alias_check_reads_v1_models_on_the_host():
    mac = FakeHost([("/v1/models", (0, MODELS + "\n200"))])
    assert host_checks.lists_alias(mac, "http://127.0.0.1:8083", "kitty-q4") is None
    problem = host_checks.lists_alias(mac, "http://127.0.0.1:8083", "kitty-f16")
    assert problem == "http://127.0.0.1:8083/v1/models lists ['kitty-q4', 'kitty-q4'], not the alias 'kitty-f16'"
    assert mac.ran[0].startswith("curl -s --max-time")


def test_an_api_key_goes_to_curl_on_stdin_never_on_the_command_line():
    mac = FakeHost([("/v1/models", (0, MODELS + "\n200"))])
    assert host_checks.lists_alias(mac, "http://127.0.0.1:8083", "kitty-q4", key_file="/opt/kitty/q4.key") is None
    (command,) = mac.ran
    assert "cat /opt/kitty/q4.key" in command and command.endswith("-K -")
    assert "Authorization: Bearer %s" in command


def test_health_messages_say_what_the_server_answered():
    url = "http://127.0.0.1:8083/health"
    assert host_checks.server_health(FakeHost([(url, (0, '{"status":"ok"}\n200'))]), url) is None
    loading = FakeHost([(url, (0, '{"error":{"message":"Loading model"}}\n503'))])
    assert host_checks.server_health(loading, url).startswith(f"{url} answers 503: still loading its model")
    assert host_checks.server_health(FakeHost([(url, (7, "\n000"))]), url) == f"{url} does not answer"


def test_redis_and_postgres_run_inside_their_containers_through_colimas_socket():
    engine = SimpleNamespace(
        compose="docker-compose -p kitty", env={"DOCKER_HOST": "unix:///Users/admin/s.sock"}, sudo=False
    )
    mac = FakeHost([("redis-cli ping", (0, "PONG\n")), ("SELECT 1", (0, "1\n"))])
    assert host_checks.redis_ping(mac, engine, "redis") is None
    assert host_checks.postgres_select(mac, engine, "postgres") is None
    assert (
        mac.ran[0] == "env DOCKER_HOST=unix:///Users/admin/s.sock docker-compose -p kitty exec -T redis redis-cli ping"
    )
    linux_engine = SimpleNamespace(compose="docker compose -p kitty", env={}, sudo=True)
    broken = FakeHost([("redis-cli ping", (1, ""))], system="linux")
    assert host_checks.redis_ping(broken, linux_engine, "redis") == "redis-cli ping answered ''"
    assert broken.ran[0].startswith("sudo -n docker compose -p kitty exec -T redis")


def test_the_end_to_end_query_wants_a_response():
    url = "http://127.0.0.1:8000/api/query"
    answered = FakeHost([("/api/query", (0, '{"response": "Connection successful", "tier": "local"}\n200'))])
    assert host_checks.query(answered, url, 60) is None
    assert "-X POST" in answered.ran[0] and "startup-validation" in answered.ran[0]
    assert host_checks.query(FakeHost([("/api/query", (0, "oops\n500"))]), url, 60) == f"POST {url} answered 500: oops"
