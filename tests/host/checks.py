"""What the host suite asks a KITTY host, on macOS or Linux, through testinfra's `host`.

testinfra has no socket or service backend for macOS (NotImplementedError):
there the checks run `lsof` and `launchctl print` through `host.run`. Every
request to a server runs ON the host (curl), since servers bind its loopback.

Each check returns None when all is well, or a sentence saying what is wrong;
the tests put that sentence in their assertion, with the service's name.
"""

from __future__ import annotations

import json
import re
import shlex

from tasks.app import compose as stack_compose
from tasks.app import runtime as stack_runtime
from tasks.config import KittyConfig
from tasks.host import layout
from tasks.host.platform import BREW_PREFIX, Platform
from tasks.supervise import launchd

# A job that restarted itself and has been up for less than this is crash-looping:
# the supervisors restart a failed server after kitty_launchd.throttle_interval (10 s).
CRASH_WINDOW_S = 300
HTTP_TIMEOUT = 10


def is_macos(host) -> bool:
    return host.system_info.type == "darwin"


def platform(host) -> Platform:
    """The deploy's Platform for this host, from what testinfra sees."""
    arch = host.system_info.arch
    user = host.check_output("id -un").strip()
    if is_macos(host):
        return Platform(os="macos", arch=arch, user=user, sudo=user != "root", brew_prefix=BREW_PREFIX.get(arch))
    return Platform(os="linux", arch=arch, user=user, sudo=user != "root")


# --- Ports ---------------------------------------------------------------------------


def listening(host, port: int) -> str | None:
    if is_macos(host):
        # Without root, lsof sees only the admin's own processes.
        command = f"lsof -nP -iTCP:{port} -sTCP:LISTEN"
        result = host.run(f"sudo -n {command} 2>/dev/null || {command}")
        if "LISTEN" in result.stdout:
            return None
    else:
        ports = [spec.rpartition(":")[2] for spec in host.socket.get_listening_sockets() if spec.startswith("tcp")]
        if str(port) in ports:
            return None
    return f"nothing listens on TCP port {port}"


# --- HTTP, from the host itself -----------------------------------------------------------


def http_get(
    host, url: str, *, key_file: str | None = None, timeout: int = HTTP_TIMEOUT, json_body: str | None = None
) -> tuple[str, str]:
    """(status code, body) of a GET (a POST with `json_body`) on the host; code "000" when nothing answered.

    A key file is read on the host and handed to curl on stdin (`-K -`): the key
    is never on a command line or in testinfra's log.
    """
    curl = f"curl -s --max-time {timeout} -w '\\n%{{http_code}}' {shlex.quote(url)}"
    if json_body is not None:
        curl += f" -H 'Content-Type: application/json' -d {shlex.quote(json_body)}"
    if key_file:
        quoted = shlex.quote(key_file)
        key = f"$(cat {quoted} 2>/dev/null || sudo -n cat {quoted})"
        curl = f'printf \'header = "Authorization: Bearer %s"\\n\' "{key}" | {curl} -K -'
    result = host.run(curl)
    body, _, code = result.stdout.rpartition("\n")
    return (code.strip() or "000"), body


def server_health(host, url: str) -> str | None:
    code, body = http_get(host, url)
    if code == "200":
        return None
    if code == "000":
        return f"{url} does not answer"
    if code == "503":
        return f"{url} answers 503: still loading its model ({body.strip()[:200]})"
    return f"{url} answers {code}: {body.strip()[:200]}"


def model_ids(body: str) -> list[str]:
    """The models a llama-server's /v1/models lists (OpenAI `data[].id`, and its own `models[].name`)."""
    data = json.loads(body)
    ids = [item.get("id") for item in data.get("data", [])]
    ids += [item.get("name") for item in data.get("models", [])]
    return [name for name in ids if name]


def lists_alias(host, base_url: str, alias: str, key_file: str | None = None) -> str | None:
    url = f"{base_url}/v1/models"
    code, body = http_get(host, url, key_file=key_file)
    if code == "000":
        return f"{url} does not answer"
    if code != "200":
        return f"{url} answers {code}: {body.strip()[:200]}"
    try:
        ids = model_ids(body)
    except (ValueError, AttributeError):
        return f"{url} answers something that is not a model list: {body.strip()[:200]}"
    return None if alias in ids else f"{url} lists {ids}, not the alias {alias!r}"


def answers_a_chat(host, base_url: str, alias: str, key_file: str | None = None) -> str | None:
    """One short chat completion (the manual's reason to run the server at all)."""
    request = json.dumps({"messages": [{"role": "user", "content": "Say OK"}], "max_tokens": 4, "temperature": 0})
    code, body = http_get(host, f"{base_url}/v1/chat/completions", key_file=key_file, timeout=120, json_body=request)
    if code != "200":
        return f"chat completion answered {code}: {body[:200]}"
    try:
        reply = json.loads(body)
        reply["choices"][0]["message"]
    except (ValueError, KeyError, IndexError):
        return f"chat completion is not a chat reply: {body[:200]}"
    if reply.get("model") != alias:
        return f"chat completion came from model {reply.get('model')!r}, not {alias!r}"
    return None


def http_ok(host, url: str) -> str | None:
    code, body = http_get(host, url)
    if code.isdigit() and 200 <= int(code) < 400:
        return None
    return f"{url} does not answer" if code == "000" else f"{url} answers {code}: {body.strip()[:300]}"


# --- Supervisors ------------------------------------------------------------------------


def systemd_job(host, unit: str) -> str | None:
    properties = "LoadState,ActiveState,SubState,NRestarts,ActiveEnterTimestampMonotonic,Result"
    shown = host.run(f"systemctl show -p {properties} {shlex.quote(unit)}; cat /proc/uptime")
    return systemd_problem(unit, shown.stdout)


def systemd_problem(unit: str, output: str) -> str | None:
    """From `systemctl show -p ...` followed by /proc/uptime (the same monotonic clock)."""
    lines = output.strip().splitlines()
    fields = dict(line.split("=", 1) for line in lines if "=" in line)
    uptime = next((line.split()[0] for line in lines if "=" not in line and line.strip()), "0")
    if fields.get("LoadState") != "loaded":
        return f"{unit} is not installed (LoadState={fields.get('LoadState')})"
    state = f"{fields.get('ActiveState')}/{fields.get('SubState')}"
    restarts = int(fields.get("NRestarts") or 0)
    if state != "active/running":
        return f"{unit} is {state} (result {fields.get('Result')}, {restarts} automatic restarts)"
    up_s = float(uptime) - int(fields.get("ActiveEnterTimestampMonotonic") or 0) / 1e6
    if restarts and up_s < CRASH_WINDOW_S:
        return f"{unit} is crash-looping: restarted {restarts} times, up for only {up_s:.0f} s"
    return None


def launchd_job(host, target: str) -> str | None:
    printed = host.run(f"launchctl print {target} 2>&1 || sudo -n launchctl print {target} 2>&1")
    etime = ""
    status = launchd.parse_print(printed.stdout.splitlines())
    if status["pid"]:
        etime = host.run(f"ps -o etime= -p {status['pid']}").stdout
    return launchd_problem(target, printed.rc, printed.stdout, etime)


def launchd_problem(target: str, rc: int, output: str, etime: str) -> str | None:
    """From `launchctl print <target>` and `ps -o etime=` of its pid."""
    if rc != 0 or "Could not find service" in output:
        return f"{target} is not loaded (launchctl print: {output.strip()[:200]})"
    status = launchd.parse_print(output.splitlines())
    runs = _launchd_field(output, "runs")
    if status["state"] != "running" or not status["pid"]:
        return f"{target} is {status['state']} (last exit code {status['last_exit_code']}, {runs or '?'} runs)"
    crashed = status["last_exit_code"] not in (None, 0)
    up_s = _etime_seconds(etime)
    if crashed and up_s is not None and up_s < CRASH_WINDOW_S:
        return (
            f"{target} is crash-looping: last exit code {status['last_exit_code']}, "
            f"{runs or '?'} runs, up for only {up_s} s"
        )
    return None


def _launchd_field(output: str, name: str) -> str | None:
    found = re.search(rf"^\s*{re.escape(name)} = (.+)$", output, re.MULTILINE)
    return found.group(1).strip() if found else None


def _etime_seconds(etime: str) -> int | None:
    """`ps -o etime` ([[dd-]hh:]mm:ss) in seconds."""
    text = etime.strip()
    if not text:
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    hours, minutes, seconds = parts
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def supervisor_job(host, cfg: KittyConfig, name: str) -> str | None:
    if is_macos(host):
        return launchd_job(host, f"system/{layout.server_label(cfg, name)}")
    return systemd_job(host, layout.server_unit(name))


# --- The application stack ----------------------------------------------------------------


def docker(host, cfg: KittyConfig) -> stack_compose.Docker:
    """The compose command line and environment the deploy itself uses on this host."""
    plat = platform(host)
    runtime = stack_runtime.runtime_of(cfg.stack, plat)
    home = host.check_output("echo ~").strip() if runtime == "colima" else None
    return stack_compose.Docker(cfg, plat, runtime, home)


def as_docker(engine: stack_compose.Docker, command: str) -> str:
    environment = " ".join(f"{key}={shlex.quote(value)}" for key, value in engine.env.items())
    prefix = "sudo -n " if engine.sudo else ""
    return f"{prefix}env {environment} {command}" if environment else f"{prefix}{command}"


def compose_exec(host, engine: stack_compose.Docker, service: str, command: str):
    return host.run(as_docker(engine, f"{engine.compose} exec -T {shlex.quote(service)} {command}"))


def redis_ping(host, engine: stack_compose.Docker, service: str) -> str | None:
    result = compose_exec(host, engine, service, "redis-cli ping")
    answer = result.stdout.strip()
    return None if answer == "PONG" else f"redis-cli ping answered {answer or result.stderr.strip()[:200]!r}"


def postgres_select(host, engine: stack_compose.Docker, service: str) -> str | None:
    # The container's own POSTGRES_USER/DB: nothing secret on this command line.
    select = 'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -tAc \'SELECT 1\''
    result = compose_exec(host, engine, service, f"sh -c {shlex.quote(select)}")
    answer = result.stdout.strip()
    return None if answer == "1" else f"SELECT 1 answered {answer or result.stderr.strip()[:200]!r}"


def container_running(host, engine: stack_compose.Docker, service: str) -> str | None:
    fmt = "{{.State.Status}}{{if .State.Health}}/{{.State.Health.Status}}{{end}}"
    ids = host.run(as_docker(engine, f"{engine.compose} ps -q {shlex.quote(service)}")).stdout.split()
    if not ids:
        return "no container"
    state = host.run(as_docker(engine, f"docker inspect --format {shlex.quote(fmt)} {ids[0]}")).stdout.strip()
    return None if state in ("running", "running/healthy") else f"container is {state}"


def query(host, url: str, timeout: int) -> str | None:
    """The manual's end-to-end test (step 6.2): a query through the brain, answered."""
    body = json.dumps({"query": "test connectivity", "userId": "startup-validation"})
    result = host.run(
        f"curl -s --max-time {timeout} -w '\\n%{{http_code}}' -X POST -H 'Content-Type: application/json' "
        f"-d {shlex.quote(body)} {shlex.quote(url)}"
    )
    answer, _, code = result.stdout.rpartition("\n")
    if code.strip() != "200":
        return f"POST {url} answered {code.strip() or 'nothing'}: {answer.strip()[:300]}"
    try:
        reply = json.loads(answer)
    except ValueError:
        return f"POST {url} answered something that is not JSON: {answer.strip()[:300]}"
    return None if isinstance(reply, dict) and reply.get("response") else f"POST {url} gave no response: {reply}"
