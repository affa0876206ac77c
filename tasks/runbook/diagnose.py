"""The manual's troubleshooting chapter as one read-only command: what is wrong, and the manual's remedy.

Per model server: its supervisor state, restarts and last exit, who holds its
port, its model files (present, stamped), its last log lines. The stack's
`compose ps` and the .env names the stack expects but the file lacks (names
only, never values). Memory pressure and swap, and the GPU wired limit on a
Mac. Every finding carries the remedy from the manual (adapted to kitty-ops:
change group_data and converge, never `kill -9`). Optionally a support
bundle: a tarball of the findings and log tails, with every secret value
redacted.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets as secrets_module
import shlex
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, StringCommand, deploy, operation
from pyinfra.facts.server import Home

from tasks.app import compose, runtime, secrets
from tasks.config import SECRET_NAME, KittyConfig
from tasks.engine.operations import connector_arguments
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.inference import api_keys, servers
from tasks.runbook import restic
from tasks.supervise import control, offload

LOG_LINES = 20
# The manual's remedies (Troubleshooting), as they apply to a host kitty-ops converges.
REMEDY = {
    "stopped": "converge again (pyinfra inventory.py deploy.py): it starts the server and waits for /health",
    "crash-loop": "read the log's last lines; out of memory: lower ctx_size, parallel or n_gpu_layers in "
    "kitty_servers (manual: 'Out of Memory'); a segmentation fault: move kitty_llamacpp.ref (manual: 'Rebuild')",
    "port": "stop the program holding the port, or move kitty_servers.<name>.port (manual: 'Port Conflict'); "
    "kitty-ops kills nothing it did not start",
    "model": "converge again: the model step downloads and verifies it (manual: 'Model Not Found')",
    "env": "add the names to secrets.env or the operator's environment and converge (manual: "
    "'Missing Environment Variables')",
    "container": "docker compose logs <service> (manual: 'Docker Services Won't Start')",
    "memory": "memory is short: disable an optional server or lower its ctx_size (manual: 'High CPU/GPU Usage')",
}


@dataclass
class Finding:
    subject: str
    problem: str
    remedy: str
    detail: str = ""
    # False for what is worth knowing but is no fault by itself (swap in use: a Mac keeps some
    # long after the pressure that made it): reported, without failing the command.
    fails: bool = True


# --- reading what the host says --------------------------------------------------------------------


def server_findings(
    name: str, port: int, state: dict, holder: dict | None, files: dict, log_tail: str
) -> list[Finding]:
    subject = f"server {name}"
    found = []
    # A job whose process keeps exiting: restarts counted by the supervisor, and not running now or just respawned.
    if (
        state["restarts"]
        and state["restarts"] > 0
        and (not state["running"] or state["last_exit"] not in (None, "0", "(never exited)"))
    ):
        found.append(
            Finding(
                subject,
                f"crash loop: {state['restarts']} restarts, last exit {state['last_exit']}",
                REMEDY["crash-loop"],
                log_tail,
            )
        )
    elif not state["running"]:
        found.append(Finding(subject, f"not running ({state['state']})", REMEDY["stopped"], log_tail))
    if holder and holder.get("command") != "llama-server":
        found.append(
            Finding(subject, f"port {port} held by PID {holder.get('pid')} ({holder.get('command')})", REMEDY["port"])
        )
    elif not holder and state["running"]:
        found.append(
            Finding(
                subject, f"running but nothing listens on port {port} (still loading?)", REMEDY["crash-loop"], log_tail
            )
        )
    for rel, file in files.items():
        if not file["exists"]:
            found.append(Finding(subject, f"model file {rel} is missing", REMEDY["model"]))
        elif not file["stamp"] or (file["stamp"]["size"], file["stamp"]["mtime"]) != (file["size"], file["mtime"]):
            found.append(
                Finding(subject, f"model file {rel} is not verified (no stamp, or it changed since)", REMEDY["model"])
            )
    return found


def gpu_findings(name: str, placed: offload.Placement, remedy: str) -> list[Finding]:
    """A server that asks for GPU layers and computes on the CPU (tasks/supervise/offload.py); on a Mac's
    LaunchDaemon the remedy is the LaunchAgent in the admin's GUI session."""
    if not placed.degraded:
        return []
    return [Finding(f"server {name}", placed.text(), remedy)]


def missing_env_names(wanted: list[str], env_names: list[str]) -> list[str]:
    present = set(env_names)
    return [name for name in wanted if name not in present]


def env_findings(env_file: str, names: list[str], stack_secrets: list[str], server_keys: list[str]) -> list[Finding]:
    """The .env's names (with ".env-present" when the file exists) against those it should hold.

    A stack secret without a value is what the converge only warns about (it leaves the name
    out): reported, not failing. A missing server key means the app cannot reach that server.
    """
    if ".env-present" not in names:
        return [Finding("stack .env", f"{env_file} is missing", REMEDY["env"])]
    missing = missing_env_names([*stack_secrets, *server_keys], names)
    if not missing:
        return []
    problem = f"names without a value: {', '.join(missing)}"
    return [Finding("stack .env", problem, REMEDY["env"], fails=any(name in server_keys for name in missing))]


def stack_findings(state: dict, wanted: list[str]) -> list[Finding]:
    """From compose.ComposeState: the engine or compose failing, a service without a container, a container
    not running or unhealthy."""
    if not state.get("ok"):
        return [Finding("stack", f"compose does not answer: {state.get('error')}", REMEDY["container"])]
    found = []
    for service in wanted:
        container = state["containers"].get(service)
        if container is None:
            found.append(Finding(f"stack {service}", "no container", REMEDY["container"]))
        elif container["state"] != "running" or container["health"] == "unhealthy":
            found.append(
                Finding(
                    f"stack {service}",
                    f"container {container['state']} (health: {container['health']})",
                    REMEDY["container"],
                )
            )
    return found


# What memory_findings reads, where the kernel tells it (Platform.memory_counters).
MEMORY_COMMAND = {
    "meminfo": "cat /proc/meminfo",
    "vm_stat": "vm_stat; sysctl hw.memsize vm.swapusage iogpu.wired_limit_mb; "
    "memory_pressure -Q 2>/dev/null | tail -n 1",
}


def memory_findings(plat: Platform, output: str) -> tuple[dict, list[Finding]]:
    """Memory and swap from /proc/meminfo (Linux) or vm_stat + sysctl (macOS)."""
    if plat.memory_counters == "meminfo":
        kib = {
            k: int(v.split()[0])
            for k, v in (line.split(":", 1) for line in output.splitlines() if ":" in line)
            if v.split() and v.split()[0].isdigit()
        }
        info = {
            "total_gib": round(kib.get("MemTotal", 0) / 2**20, 2),
            "available_gib": round(kib.get("MemAvailable", 0) / 2**20, 2),
            "swap_used_gib": round((kib.get("SwapTotal", 0) - kib.get("SwapFree", 0)) / 2**20, 2),
        }
    else:
        pages = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(.+?):\s+(\d+)\.?$", output, re.MULTILINE)}
        size = int(re.search(r"page size of (\d+)", output).group(1)) if "page size of" in output else 16384
        free = sum(pages.get(k, 0) for k in ("Pages free", "Pages inactive", "Pages purgeable")) * size
        used = re.search(r"vm\.swapusage: total = \S+\s+used = ([\d.]+)M", output)
        wired = re.search(r"iogpu.wired_limit_mb: (\d+)", output)
        memsize = re.search(r"hw.memsize: (\d+)", output)
        info = {
            "total_gib": round(int(memsize.group(1)) / 2**30, 2) if memsize else None,
            "available_gib": round(free / 2**30, 2),
            "swap_used_gib": round(float(used.group(1)) / 1024, 2) if used else None,
            "gpu_wired_limit_mb": int(wired.group(1)) if wired else None,
        }
    found = []
    if info["total_gib"] and info["available_gib"] is not None and info["available_gib"] < 0.05 * info["total_gib"]:
        found.append(
            Finding("memory", f"only {info['available_gib']} GiB of {info['total_gib']} available", REMEDY["memory"])
        )
    if info.get("swap_used_gib"):
        found.append(Finding("memory", f"{info['swap_used_gib']} GiB swapped out", REMEDY["memory"], fails=False))
    return info, found


# --- secrets never leave ---------------------------------------------------------------------------

REDACTED = "***redacted***"
# A name that says its value is a secret: the schema's rule (config.SECRET_NAME) and the usual
# others. A name for where a secret is kept (API_KEY_FILE, --api-key-file) is not one.
_SECRET_NAME = re.compile(rf"{SECRET_NAME.pattern}|PASS|PWD|AUTH|COOKIE|SESSION|PRIVATE|SIGNATURE|SALT", re.I)
_A_PATH = re.compile(r"[_-](FILE|PATH|DIR)$", re.I)
# A value: a quoted string (spaces and escaped quotes included) or a word.
_QUOTED = r'"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\''
_VALUE = rf"(?:{_QUOTED}|[^\s\"',;&]+)"
_PATTERNS: list[tuple[re.Pattern, object]] = [
    # A private key, whole.
    (
        re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.S),
        lambda m: f"-----BEGIN {m.group(1)}PRIVATE KEY----- {REDACTED}",
    ),
    # HTTP credentials, any scheme (Bearer, Basic, Digest, a bare key): the rest of the header.
    (
        re.compile(
            r"\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)(?:(Bearer|Basic|Token|Digest|ApiKey)\s+)?"
            r"([^\"'\n]+)",
            re.I,
        ),
        lambda m: m.group(1) + (m.group(2) + " " if m.group(2) else "") + REDACTED,
    ),
    (re.compile(r"\b((?:set-)?cookie[\"']?\s*[:=]\s*[\"']?)([^\"'\n]+)", re.I), lambda m: m.group(1) + REDACTED),
    (re.compile(r"\b(Bearer|Basic)(\s+)[A-Za-z0-9._~+/=-]{6,}"), lambda m: m.group(1) + m.group(2) + REDACTED),
    # A URL's userinfo password: postgres://user:PASSWORD@host, redis://:PASSWORD@host.
    (
        re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://[^\s/@:\"']*):([^\s/@\"']*)@"),
        lambda m: f"{m.group(1)}:{REDACTED}@",
    ),
    # JSON: "api_key": "value", "password": 1234.
    (
        re.compile(r'("([^"\\\n]*)"\s*:\s*)("(?:[^"\\\n]|\\.)*"|[^\s,}\]]+)'),
        lambda m: f'{m.group(1)}"{REDACTED}"' if _secret(m.group(2), m.group(3)) else m.group(0),
    ),
    # A command line's option and its value: --api-key VALUE, --hf-token=VALUE.
    (
        re.compile(rf"(?<![\w-])(--?[A-Za-z][\w-]*)(=|[ \t]+)({_VALUE})"),
        lambda m: _named(m),
    ),
    # NAME=value, NAME: value (a .env, a shell, a log, YAML); a quoted value whole, spaces and all.
    (
        re.compile(rf"\b([A-Za-z_][A-Za-z0-9_.-]*)([ \t]*=[ \t]*)({_VALUE})"),
        lambda m: _named(m),
    ),
    (
        re.compile(rf"\b([A-Za-z_][A-Za-z0-9_.-]*)([ \t]*:[ \t]+)({_QUOTED}|[^\n,;}}]+)"),
        lambda m: _named(m),
    ),
    # Well-known key shapes, whatever names them: OpenAI/Anthropic sk-..., Hugging Face hf_...,
    # GitHub ghp_/gho_/github_pat_..., Slack xox.-..., AWS access key ids.
    (
        re.compile(
            r"\b(?:sk-[A-Za-z0-9_-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|"
            r"github_pat_[A-Za-z0-9_]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16})\b"
        ),
        lambda m: REDACTED,
    ),
]


def _named(m: re.Match) -> str:
    """NAME, separator, value: the value redacted when the name says secret. A scheme already
    followed by its redacted credentials (`authorization=Token ***redacted***`) stays."""
    if not _secret(m.group(1), m.group(3)) or m.string.startswith(f" {REDACTED}", m.end()):
        return m.group(0)
    return m.group(1) + m.group(2) + REDACTED


def _secret(name: str, value: str) -> bool:
    """A value to redact: named as a secret (not as where one is kept), and not redacted already."""
    name, value = name.strip("-\"'"), value.strip("\"' ")
    done = value == REDACTED or re.fullmatch(rf"\w+ {re.escape(REDACTED)}", value)
    return bool(_SECRET_NAME.search(name)) and not _A_PATH.search(name) and not done


def redact(text: str, known: list[str]) -> str:
    """Every secret value the controller knows, then whatever looks like one without being known:
    credentials in a header, a URL, a JSON field, a command line option or a NAME=value whose name
    says secret (a quoted value whole), a private key, a well-known token shape."""
    for value in sorted((v for v in known if v), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    for pattern, replace in _PATTERNS:
        text = pattern.sub(replace, text)
    return text


def known_secrets(cfg: KittyConfig, host_name: str) -> list[str]:
    """Every secret value the deploy knows on the controller: the stack's secrets, the backup password
    (this host's own and the shared one) and the model servers' API keys."""
    names = [*cfg.stack.secrets, cfg.backup.password_secret, *restic.password_secrets(cfg, host_name)]
    values = secrets.secret_values(cfg.stack.model_copy(update={"secrets": names}))
    return [*values.values(), *api_keys.env_secrets(cfg).values()]


def _redact_tree(value, known: list[str]):
    if isinstance(value, str):
        return redact(value, known)
    if isinstance(value, dict):
        return {redact(str(k), known): _redact_tree(v, known) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_tree(v, known) for v in value]
    return value


def bundle(findings: list[Finding], facts: dict, known_secrets: list[str], path: Path) -> Path:
    """A tarball of the findings and facts, secrets redacted, written 0600 in a folder only its
    owner can enter (0700): it holds log tails, and prompts are in them. A folder that is there
    and open to others is refused (name a new one: it is made 0700)."""
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)
        folder.chmod(0o700)
    info = folder.stat()
    if not folder.is_dir() or info.st_mode & 0o077 or info.st_uid != os.geteuid():
        raise BundleRefused(
            f"{folder} is open to others (mode {info.st_mode & 0o777:04o}) or not yours: the support bundle "
            "holds log tails (prompts among them) and goes only in a folder of your own that only you can "
            f"enter: chmod 700 {folder}, or name a new folder (it is made 0700)"
        )
    # Redacted string by string, before JSON escapes a value (a secret holding a quote or a backslash
    # would no longer match after).
    tree = _redact_tree({"findings": [asdict(f) for f in findings], "facts": facts}, known_secrets)
    report = json.dumps(tree, indent=2, default=str)
    data = report.encode()
    # A new 0600 file beside it, renamed over it: a link at `path` is replaced, never written through.
    tmp = folder / f".{path.name}.{os.getpid()}.{secrets_module.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w:gz") as tar:
            member = tarfile.TarInfo("diagnose/findings.json")
            member.size, member.mtime, member.mode = len(data), int(time.time()), 0o600
            tar.addfile(member, io.BytesIO(data))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class BundleRefused(Exception):
    """The bundle's folder is not private: nothing written."""


# --- on the host -----------------------------------------------------------------------------------


def _arguments(host, sudo: bool, **more) -> dict:
    # The operation's own connector arguments (its sudo password): a FunctionCommand is not given them.
    return connector_arguments(host, _sudo=sudo, **more)


def _run(host, command: str, sudo: bool = False) -> str:
    """stdout only: stderr (a missing file, ...) must not read as a finding's data."""
    _, output = host.run_shell_command(StringCommand(command), **_arguments(host, sudo, _timeout=60))
    return "\n".join(output.stdout_lines)


def status_command(cfg: KittyConfig, plat: Platform, name: str) -> str:
    return control.status_command(plat, servers.job(cfg, plat, name))


@operation(is_idempotent=False)
def examine(cfg: KittyConfig, plat: Platform, engine: compose.Docker | None, bundle_to: str | None = None):
    """Read everything, print the findings with their remedies; writes a redacted bundle when asked."""
    if not host.state.is_executing:
        host.noop("read on the host when run; changes nothing")
        return
    yield FunctionCommand(_examine, (cfg, plat, engine, bundle_to), {})


def _examine(state, host, cfg: KittyConfig, plat: Platform, engine, bundle_to: str | None) -> bool:
    from tasks.host.host_facts import ListeningPorts
    from tasks.inference.model_facts import ModelFileStates

    findings: list[Finding] = []
    facts: dict = {"servers": {}}
    listening = host.get_fact(ListeningPorts, **_arguments(host, plat.sudo)) or {}
    for name, srv in cfg.enabled_servers().items():
        state = control.status_of(plat, _run(host, status_command(cfg, plat, name), sudo=plat.sudo))
        rels = [
            f"{m.dir}/{f.name}"
            for key in filter(None, [srv.model, srv.mmproj])
            for m in [cfg.models[key]]
            for f in m.files
        ]
        files = (
            host.get_fact(ModelFileStates, models_dir=cfg.paths.models_dir, files=rels, **_arguments(host, plat.sudo))
            or {}
        )
        files = {rel: files.get(rel, {"exists": False}) for rel in rels}
        tail = _run(host, f"tail -n {LOG_LINES} {shlex.quote(layout.server_log(cfg, name))}", sudo=plat.sudo)
        found = server_findings(name, srv.port, state, listening.get(srv.port), files, tail)
        placed = None
        if offload.asks_gpu(srv) and state["running"]:
            load = _run(host, offload.log_command(layout.server_log(cfg, name)), sudo=plat.sudo).splitlines()
            placed = offload.placement(load, srv.n_gpu_layers)
            found += gpu_findings(name, placed, offload.remedy(cfg, plat))
        findings += found
        facts["servers"][name] = {
            "supervisor": state,
            "port": srv.port,
            "holder": listening.get(srv.port),
            "models": files,
            "layers": placed.text() if placed else None,
            "log_tail": tail,
        }
    if engine is not None:
        env_file = layout.env_file(cfg)
        # Names only: sed prints what is left of each NAME=value line, never the value.
        names = _run(
            host,
            f"test -f {shlex.quote(env_file)} && echo .env-present && "
            f"sed -n 's/^\\([A-Za-z_][A-Za-z0-9_]*\\)=.*/\\1/p' {shlex.quote(env_file)}",
            sudo=plat.sudo,
        ).split()
        facts["env_names"] = [name for name in names if name != ".env-present"]
        findings += env_findings(env_file, names, list(cfg.stack.secrets), list(api_keys.env_secrets(cfg)))
        state = host.get_fact(
            compose.ComposeState, compose=engine.compose, project=cfg.stack.project_name,
            **_arguments(host, engine.sudo, _env=engine.env),
        )  # fmt: skip
        facts["compose"] = state
        findings += stack_findings(state, list(cfg.stack.services))
    memory = _run(
        host,
        MEMORY_COMMAND[plat.memory_counters],
    )
    facts["memory"], found = memory_findings(plat, memory)
    findings += found
    # Where each server that asks for GPU layers has them, healthy or not.
    for name, found in facts["servers"].items():
        if found.get("layers"):
            host.log(f"server {name}: {found['layers']}", logger.info)
    for line in report_lines(findings):
        host.log(line, logger.warning if findings else logger.info)
    if bundle_to:
        try:
            where = bundle(findings, facts, known_secrets(cfg, host.name), Path(bundle_to))
        except BundleRefused as refused:
            host.log(f"diagnose: no support bundle: {refused}", logger.error)
            return False
        host.log(f"support bundle (secret values redacted, 0600): {where}", logger.info)
    # Like the converge's health table: a fault makes the command exit non-zero, so a script
    # (or a monitor) running diagnose can tell a sound host from one that is not. The last
    # line says so, telling these findings from a diagnose that itself broke.
    faults = [f for f in findings if f.fails]
    if faults:
        host.log(f"diagnose: {len(faults)} finding(s) to act on above: exit non-zero", logger.error)
    return not faults


def report_lines(findings: list[Finding]) -> list[str]:
    if not findings:
        return ["nothing wrong found"]
    lines = [f"{len(findings)} finding(s):"]
    for f in findings:
        lines += [f"  {f.subject}: {f.problem}", f"    remedy: {f.remedy}"]
    return lines


@deploy("Diagnose")
def run(cfg: KittyConfig, plat: Platform, bundle_to: str | None = None) -> None:
    engine = None
    if cfg.stack.enabled and "application" in host.groups:
        # The stack's engine as the deploy reaches it (colima's socket, sudo on Linux).
        kind = runtime.runtime_of(cfg.stack, plat)
        engine = compose.Docker(cfg, plat, kind, host.get_fact(Home) if kind == "colima" else None)
    examine(name="Diagnose the KITTY host", cfg=cfg, plat=plat, engine=engine, bundle_to=bundle_to)
