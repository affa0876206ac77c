"""The health table that ends every converge: each model server and stack service, its port, state, latency.

    service          port   state    latency  per request
    server q4        8083   healthy     3 ms  4096 tokens
    server summary   8085   down           -  -
    stack brain      8000   healthy    12 ms  -

A model server is healthy when /health says so AND its /props match what was
declared: the model file, the alias and the context one request gets
(ctx_size, split over --parallel slots unless kv_unified). A server started by
hand on the port with other arguments is named with the field that differs.
The "per request" column is what the server itself reports.

A stack service is healthy when its health check passes AND, for an HTTP
check, its answer does not say otherwise: a 200 whose JSON `status` is
degraded/down/error, or that names a dependency as failing (`"ok": false`),
is `degraded: <dependency> (<its error>)`. That fails the converge unless
the service is `optional` (kitty_stack.services.<name>.optional), which only
shows it; a service that does not answer fails either way. /props of a server with
an api_key_file is read with the key (on curl's stdin, never a command line).

Before anything runs (and with --dry), `report` also prints the restart table
of every supervised program this converge planned (tasks/supervise).

One shell command probes everything ON the host (the servers listen on the
host's loopback, so this works from a laptop too) and prints a line per
service; Python renders the table. Anything unhealthy fails the converge,
naming what and where to look.

It changes nothing, and pyinfra is told so honestly. pyinfra counts an
operation as changed when it executed at least one command
(`OperationMeta.did_change`). The probe is a fact, a read-only query like any
other, read while this operation executes, after every earlier step has run
(never while planning: then the servers may not even be installed yet). The
operation yields a command only when something is unhealthy, and that command
is the failure itself. A healthy host reports "No changes" here, and a
converged host's second converge still counts 0 changed operations.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Literal

from pyinfra import host, logger
from pyinfra.api import FactBase, FunctionCommand, deploy, operation
from pyinfra.facts.server import Home

from tasks import supervise
from tasks.app import compose as stack_compose
from tasks.app import runtime as stack_runtime
from tasks.config import KittyConfig
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.inference import rpc_workers, server_args, servers
from tasks.supervise import control, offload
from tasks.system import macos

MARK = "kitty-health"
PROPS_MARK = "kitty-props"
# A stack service's health answer, one line: it may say the service is degraded and why.
BODY_MARK = "kitty-body"
# A line of a model server's load log that says where its layers are (tasks/supervise/offload.py).
GPU_MARK = "kitty-gpu"
# What a health answer's `status` says when the service runs but is not well.
DEGRADED_STATUSES = {"degraded", "down", "error", "unhealthy", "fail", "failed", "failing"}
# Seconds one HTTP probe may take; a server that needs longer is not healthy.
HTTP_TIMEOUT = 5


@dataclass(frozen=True)
class Declared:
    """What a model server was declared to serve, as its /props reports it."""

    props_url: str
    model_path: str
    alias: str
    # default_generation_settings.n_ctx: the context of one slot, i.e. one request.
    ctx_per_request: int
    # The server's api_key_file: /props answers only with the key.
    key_file: str | None = None


@dataclass(frozen=True)
class Check:
    """One line of the table: what to probe and where to look when it is not healthy."""

    kind: Literal["server", "stack", "rpc"]
    name: str
    port: int | None
    # llama: llama-server's /health (503 while it loads the model); http: any 2xx/3xx;
    # command: a shell command that exits 0 when healthy.
    probe: Literal["llama", "http", "command"]
    target: str
    where: str
    # Model servers: what /props must say.
    declared: Declared | None = None
    # Degraded (the service says so, or names a failing dependency) is reported, not a failure.
    optional: bool = False
    # Model servers that ask for GPU layers: how many, and the log whose load says where they went.
    gpu_layers: int = 0
    log: str = ""
    # What to do when such a server serves from the CPU.
    on_cpu: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True)
class Row:
    check: Check
    state: str
    latency_ms: int | None
    # The context one request gets, as the server reports it ("" when not a model server).
    context: str = ""
    # Where a model server's layers are ("layers on MTL0 (Apple M3 Ultra) (31/31)"), when it asks for some.
    layers: str = ""

    @property
    def healthy(self) -> bool:
        return self.state == "healthy"


def checks(cfg: KittyConfig, plat: Platform, groups, compose: str | None = None) -> list[Check]:
    """What this host runs: enabled model servers (inference) and stack services (application)."""
    found = []
    if "inference" in groups:
        for name, srv in cfg.enabled_servers().items():
            url = servers.health_url(srv)
            declared = Declared(
                props_url=url.removesuffix("/health") + "/props",
                model_path=server_args.model_path(cfg, srv.model, cfg.paths.models_dir),
                alias=srv.alias,
                ctx_per_request=srv.ctx_per_request,
                key_file=srv.api_key_file,
            )
            where = server_logs(cfg, plat, name)
            gpu = {}
            if offload.asks_gpu(srv):
                gpu = {"gpu_layers": srv.n_gpu_layers, "log": layout.server_log(cfg, name)}
                gpu["on_cpu"] = offload.remedy(cfg, plat)
            found.append(Check("server", name, srv.port, "llama", url, where, declared, srv.optional, **gpu))
        if cfg.rpc_worker is not None:
            # llama.cpp's rpc-server speaks no HTTP: healthy when it accepts a connection.
            worker = cfg.rpc_worker
            where = rpc_worker_logs(cfg, plat)
            found.append(Check("rpc", "worker", worker.port, "command", rpc_workers.tcp_probe(worker), where))
    if "application" in groups and cfg.stack.enabled:
        for name, service in cfg.stack.services.items():
            logs = f"{compose_logs(cfg, plat)} {name}"
            if service.health and service.health.startswith("/"):
                url = f"http://127.0.0.1:{service.port}{service.health}"
                found.append(Check("stack", name, service.port, "http", url, logs, optional=service.optional))
            else:
                # Redis PING, Postgres SELECT 1, or a running (healthy) container: as the stack step waits for it.
                probe = stack_compose._probe(compose or "docker compose", name, service.port, service.health)
                found.append(Check("stack", name, service.port, "command", probe, logs, optional=service.optional))
    return found


def server_logs(cfg: KittyConfig, plat: Platform, name: str) -> str:
    return control.where_to_look(plat, layout.server_log(cfg, name), servers.job(cfg, plat, name))


def rpc_worker_logs(cfg: KittyConfig, plat: Platform) -> str:
    job = control.Job(layout.RPC_WORKER_LABEL, layout.RPC_WORKER_UNIT)
    return control.where_to_look(plat, layout.rpc_worker_log(cfg), job)


def compose_logs(cfg: KittyConfig, plat: Platform) -> str:
    return f"{' '.join(plat.compose_argv)} -p {cfg.stack.project_name} logs"


def probe_command(checks: list[Check]) -> str:
    """One shell command (POSIX sh, macOS and Linux) printing `kitty-health|KIND|NAME|RESULT` per check.

    RESULT is `http CODE SECONDS CURL_EXIT` (curl's own timing; 000 when nothing answered)
    or `ok|failed MILLISECONDS` for a command probe. It always exits 0: an
    unhealthy service is an answer, not a failure of the probe.

    The checks run at once, each in a background subshell writing its own file, printed in
    order when all are done: the probe takes as long as its slowest check, not their sum
    (a `docker compose exec` alone is a third of a second).
    """
    # macOS `date` has no %N: perl (in macOS and in Debian's essential set) gives milliseconds.
    parts = [
        "export LC_ALL=C",
        "now_ms() { perl -MTime::HiRes=time -e 'printf \"%d\\n\", time * 1000' 2>/dev/null"
        " || echo $(($(date +%s) * 1000)); }",
    ]
    probes = []
    for check in checks:
        parts_before = len(parts)
        line = f"{MARK}|{check.kind}|{check.name}"
        if check.probe == "command":
            parts.append(
                f"t=$(now_ms); if ( {check.target} ) >/dev/null 2>&1; then s=ok; else s=failed; fi; "
                f'echo "{line}|$s $(($(now_ms) - t))"'
            )
        elif check.kind == "stack":
            # The answer too: a service that answers 200 may still say it is degraded.
            parts.append(
                f"b=$(mktemp); r=$(curl -s -o \"$b\" -w '%{{http_code}} %{{time_total}}' --max-time {HTTP_TIMEOUT} "
                f'{shlex.quote(check.target)}); e=$?; echo "{line}|http ${{r:-000 0}} $e"; '
                f'echo "{BODY_MARK}|{check.kind}|{check.name}|$(head -c 4096 "$b" | tr -d \'\\n\')"; rm -f "$b"'
            )
        else:
            parts.append(
                f"r=$(curl -s -o /dev/null -w '%{{http_code}} %{{time_total}}' --max-time {HTTP_TIMEOUT} "
                f'{shlex.quote(check.target)}); echo "{line}|http ${{r:-000 0}} $?"'
            )
        if check.declared:
            # One line of JSON (llama-server's is compact; newlines dropped to be sure).
            props_url = shlex.quote(check.declared.props_url)
            if check.declared.key_file:
                # /props wants the key: it goes to curl on stdin (printf is a shell builtin), never
                # in a command line; read as the server's account when that is not us.
                key = shlex.quote(check.declared.key_file)
                fetch = (
                    f"{{ k=$(cat {key} 2>/dev/null || sudo -n cat {key} 2>/dev/null); "
                    'printf \'header = "Authorization: Bearer %s"\\n\' "$k"; } | '
                    f"curl -s --max-time {HTTP_TIMEOUT} -K - {props_url}"
                )
            else:
                fetch = f"curl -s --max-time {HTTP_TIMEOUT} {props_url}"
            parts.append(f"p=$({fetch} | tr -d '\\n'); echo \"{PROPS_MARK}|{check.kind}|{check.name}|$p\"")
        if check.gpu_layers:
            mark = shlex.quote(f"{GPU_MARK}|{check.kind}|{check.name}|")
            parts.append(f"{{ {offload.log_command(check.log)}; }} | sed 's/^/'{mark}'/'")
        probes.append("; ".join(parts[parts_before:]))
        del parts[parts_before:]
    if probes:
        together = " ".join(f'( {probe} ) >"$d/{i}" &' for i, probe in enumerate(probes))
        in_order = "; ".join(f'cat "$d/{i}"' for i in range(len(probes)))
        one_by_one = "; ".join(f"( {probe} )" for probe in probes)
        # No temporary folder (a full disk): one check after the other, as the answer is the same.
        parts.append(
            f'if d=$(mktemp -d "${{TMPDIR:-/tmp}}/kitty-health.XXXXXX"); then {together} wait; {in_order}; '
            f'rm -rf "$d"; else {one_by_one}; fi'
        )
    parts.append("true")
    return "; ".join(parts)


def parse(lines) -> dict[str, list[str]]:
    """`{"server q4": ["http", "200", "0.003"], ...}` from the probe's output; other lines are ignored."""
    results = {}
    for line in lines:
        parts = line.strip().split("|")
        if len(parts) == 4 and parts[0] == MARK:
            results[f"{parts[1]} {parts[2]}"] = parts[3].split()
    return results


def parse_gpu(lines) -> dict[str, list[str]]:
    """`{"server q4": [load log lines]}`: what each GPU server's load said about its layers."""
    found: dict[str, list[str]] = {}
    for line in lines:
        mark, _, rest = line.rstrip("\n").partition("|")
        kind, _, rest = rest.partition("|")
        name, _, said = rest.partition("|")
        if mark == GPU_MARK:
            found.setdefault(f"{kind} {name}", []).append(said)
    return found


def parse_props(lines, wanted_mark: str = PROPS_MARK) -> dict[str, dict]:
    """`{"server q4": {...}}`: each server's /props (or, with BODY_MARK, each stack service's
    health answer) as it answered; unreadable answers are left out."""
    found = {}
    for line in lines:
        mark, _, rest = line.strip().partition("|")
        kind, _, rest = rest.partition("|")
        name, _, body = rest.partition("|")
        if mark != wanted_mark:
            continue
        try:
            props = json.loads(body)
        except ValueError:
            continue
        if isinstance(props, dict):
            found[f"{kind} {name}"] = props
    return found


def props_differences(declared: Declared, props: dict) -> list[str]:
    """`ctx_size: 512 tokens per request, declared 1024 ...` for each declared value /props contradicts."""
    found = []
    model = props.get("model_path")
    if model is not None and model != declared.model_path:
        found.append(f"model: serves {model}, declared {declared.model_path}")
    alias = props.get("model_alias")
    if alias is not None and alias != declared.alias:
        found.append(f"alias: serves {alias!r}, declared {declared.alias!r}")
    n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
    if isinstance(n_ctx, int) and n_ctx != declared.ctx_per_request:
        found.append(
            f"ctx_size: serves {n_ctx} tokens per request, declared {declared.ctx_per_request} "
            "(ctx_size, parallel, kv_unified)"
        )
    return found


def degraded_reason(body: dict) -> str | None:
    """Why a health answer says its service is not well: its status, and each dependency it names as failing.

    `{"status": "degraded", "dependencies": {"llamacpp_q4": {"ok": false, "error": "..."}}}`
    -> `degraded: llamacpp_q4 (...)`. None when it says nothing bad.
    """
    status = body.get("status")
    status = status.strip().lower() if isinstance(status, str) else ""
    failing = []
    dependencies = body.get("dependencies") or body.get("checks") or {}
    if isinstance(dependencies, dict):
        for name, dep in sorted(dependencies.items()):
            if not isinstance(dep, dict):
                continue
            ok = dep.get("ok", dep.get("healthy"))
            dep_status = dep.get("status")
            if ok is False or (ok is None and isinstance(dep_status, str) and dep_status.lower() in DEGRADED_STATUSES):
                detail = dep.get("error") or dep.get("status") or dep.get("url") or dep.get("address")
                failing.append(f"{name} ({str(detail)[:120]})" if detail else str(name))
    if status not in DEGRADED_STATUSES and not failing:
        return None
    word = status if status in DEGRADED_STATUSES else "degraded"
    return f"{word}: {', '.join(failing) or 'no reason given'}"


def assess(check: Check, result: list[str] | None, props: dict | None = None, load: list[str] | None = None) -> Row:
    row = _assess_props(check, result, props)
    if not (check.gpu_layers and row.healthy):
        return row
    placed = offload.placement(load or [], check.gpu_layers)
    if placed.degraded:
        return Row(check, placed.text(), None, row.context)
    return Row(check, row.state, row.latency_ms, row.context, placed.text())


def _assess_props(check: Check, result: list[str] | None, props: dict | None) -> Row:
    row = _assess(check, result)
    if check.kind == "stack" and row.healthy and props is not None:
        # For a stack service, `props` is its health answer.
        reason = degraded_reason(props)
        return Row(check, reason, None) if reason else row
    if not (check.declared and props is not None):
        return row
    n_ctx = (props.get("default_generation_settings") or {}).get("n_ctx")
    context = f"{n_ctx} tokens" if isinstance(n_ctx, int) else ""
    differences = props_differences(check.declared, props) if row.healthy else []
    if differences:
        return Row(check, "other settings: " + "; ".join(differences), None, context)
    return Row(check, row.state, row.latency_ms, context)


def _assess(check: Check, result: list[str] | None) -> Row:
    if not result:
        return Row(check, "no answer from the probe", None)
    if result[0] == "http" and len(result) == 4:
        code, seconds, curl_exit = result[1:]
        latency = _ms(seconds)
        if code == "000":
            # 28: connected (or not) but no answer in time: a hung server, not a stopped one.
            state = f"no answer in {HTTP_TIMEOUT} s" if curl_exit == "28" else "down"
        elif check.probe == "llama":
            state = {"200": "healthy", "503": "loading"}.get(code, f"http {code}")
        else:
            state = "healthy" if code.isdigit() and 200 <= int(code) < 400 else f"http {code}"
        return Row(check, state, latency if state == "healthy" else None)
    if result[0] in ("ok", "failed") and len(result) == 2:
        if result[0] == "failed":
            return Row(check, "failed", None)
        return Row(check, "healthy", int(result[1]) if result[1].isdigit() else None)
    return Row(check, f"unreadable probe result {' '.join(result)!r}", None)


def _ms(seconds: str) -> int | None:
    try:
        return round(float(seconds) * 1000)
    except ValueError:
        return None


def render(rows: list[Row]) -> list[str]:
    table = [("service", "port", "state", "latency", "per request")]
    for row in rows:
        latency = f"{row.latency_ms} ms" if row.latency_ms is not None else "-"
        table.append((row.check.label, str(row.check.port or "-"), row.state, latency, row.context or "-"))
    widths = [max(len(line[i]) for line in table) for i in range(5)]
    lines = [
        f"{service:<{widths[0]}}  {port:<{widths[1]}}  {state:<{widths[2]}}  {latency:>{widths[3]}}  {ctx}".rstrip()
        for service, port, state, latency, ctx in table
    ]
    if not any(row.layers for row in rows):
        return lines
    # Where each GPU server's layers are, for servers that ask for some.
    layers = ["layers", *[row.layers or "-" for row in rows]]
    width = max(len(line) for line in lines)
    return [f"{line.ljust(width)}  {where}" for line, where in zip(lines, layers, strict=True)]


def tolerated(row: Row) -> bool:
    """An optional service that runs but says it is degraded: reported, not a failure."""
    return row.check.optional and row.state.startswith(tuple(f"{s}:" for s in DEGRADED_STATUSES))


def failure_message(rows: list[Row]) -> str | None:
    bad = [row for row in rows if not row.healthy and not tolerated(row)]
    if not bad:
        return None
    lines = [f"{len(bad)} of {len(rows)} not healthy:"]
    for row in bad:
        where = f"port {row.check.port}, " if row.check.port else ""
        if row.check.on_cpu and row.state.startswith("degraded: ") and "on CPU" in row.state:
            # It serves, from the CPU: the remedy, not a log to read.
            lines.append(f"  {row.check.label} ({where}{row.state}): {row.check.on_cpu}")
            continue
        lines.append(f"  {row.check.label} ({where}{row.state}): look at {row.check.where}")
    return "\n".join(lines)


class ServiceHealth(FactBase[dict]):
    """The probe's results (see `probe_command`), keyed `"<kind> <name>"`."""

    default = dict

    def command(self, checks: list[Check]) -> str:
        return probe_command(checks)

    def process(self, output) -> dict:
        lines = list(output)
        found = {**parse(lines), "props": parse_props(lines), "bodies": parse_props(lines, BODY_MARK)}
        return {**found, "gpu": parse_gpu(lines)}


@deploy("Verification")
def report(cfg: KittyConfig, plat: Platform) -> None:
    """The health table of everything this host runs, probed once every step before has run.

    First, at plan time (so with --dry too, and before anything runs): the
    restart table of every supervised program the steps before planned."""
    for line in supervise.restart_table():
        logger.info(f"{host.print_prefix}{line}")
    compose, env, sudo = None, dict(plat.env), False
    if "application" in host.groups and cfg.stack.enabled:
        runtime = stack_runtime.runtime_of(cfg.stack, plat)
        docker = stack_compose.Docker(cfg, plat, runtime, host.get_fact(Home) if runtime == "colima" else None)
        compose, env, sudo = docker.compose, docker.env, docker.sudo
    found = checks(cfg, plat, host.groups, compose)
    if not found:
        return
    health_table(
        name="Health table",
        checks=found,
        # Healthy now, but would it come back by itself after a power cut?
        warning=macos.unattended_restart_warning(cfg, plat),
        _env=env,
        # The stack's probes talk to the engine, as root where the admin may not be in the docker group.
        _sudo=sudo,
        # A hung `docker compose exec` must not hang the converge.
        _timeout=60 + 2 * HTTP_TIMEOUT * len(found),
    )


@operation()
def health_table(checks: list[Check], warning: str | None = None):
    """Print the table; fail, naming each unhealthy service and where to look, when one is not healthy."""
    if not host.state.is_executing:
        host.noop("probed on the host at the end of the converge")
        return
    # The fact inherits this operation's _sudo/_env/_timeout.
    results = host.get_fact(ServiceHealth, checks=checks)
    props = {**results.get("props", {}), **results.get("bodies", {})}
    loads = results.get("gpu", {})
    rows = [assess(check, results.get(check.label), props.get(check.label), loads.get(check.label)) for check in checks]
    for line in render(rows):
        host.log(line, logger.info)
    if warning:
        host.log_styled(f"warning: {warning}", fg="yellow", log_func=logger.warning)
    message = failure_message(rows)
    if message:
        # The only command this operation yields: it changes nothing, it fails the converge.
        yield FunctionCommand(_fail, (message,), {})


def _fail(state, host, message: str) -> bool:
    for line in message.splitlines():
        host.log_styled(line, fg="red", log_func=logger.error)
    return False
