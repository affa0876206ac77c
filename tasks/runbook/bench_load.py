"""How fast each enabled model server's model loads in each of llama.cpp's load modes (bench.py, bench_load_modes).

Per server, the production server is stopped through its own supervisor (the
converge's systemctl / launchctl bootout), then for each mode of
`kitty_bench.load_modes_measured` a throwaway llama-server runs the server's
own command line (same build, model, context, GPU layers) with that
`--load-mode`, on a free loopback port (`--port 0`, as the build's smoke test
does) and without its key and metrics, as the server's own user; it is stopped
by its PID as soon as its log says `model loaded`. Then the production server
is started again through its supervisor and waited for until healthy.

Why stop the real server rather than load a second copy beside it: a second
copy of a model loaded without mmap is a second copy in memory, and the F16
model (141 GB) twice does not fit a 192 GB Mac; with the real one stopped, the
throwaway uses what the memory budget already gave that server. Why not
restart the real server in each mode: that means rewriting its definition and
record, the converge's business; a throwaway changes nothing on the host.

The time is llama.cpp's own: the log's timestamps (--log-timestamps) from its
first model line (`load_model: loading model`) to `llama_server: model loaded`, which
includes the warm-up run that touches every weight (with mmap, the pages are
only read then). GB/s is the model's file sizes on the host (10^9 bytes) over
that time. Cold: the page cache is dropped before each load where the host
lets it (Linux as root: drop_caches; macOS: `purge`, with sudo); warm
otherwise, and the row says which.
"""

from __future__ import annotations

import csv
import io
import re
import shlex
from dataclasses import asdict, dataclass, field

from tasks.config import KittyConfig, ModelServer, flags
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.inference import server_args, servers
from tasks.supervise import control

GB = 1000**3
# llama.cpp's log line prefix with --log-prefix --log-timestamps: minutes.seconds.ms.us, then the level.
STAMP = re.compile(r"(\d+)\.(\d{2})\.(\d{3})\.(\d{3}) [A-Z] (.*)$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
BEGIN_MARKS = ("load_model: loading model", "llama_model_loader: loaded meta data")
# llama-server's own line once the model is loaded and warmed up (`srv  llama_server: model loaded`).
END_MARK = ": model loaded"
MODE_USED = re.compile(r"loading model tensors.*\(load_mode = ([\w+]+)\)")
# What the host script prints besides the log's lines.
MARK = "KITTY-LOAD"
# The flags of the server's own command line the throwaway replaces or leaves out (the key, metrics: no client).
# Its verbosity too: the load_tensors line that names the mode used is logged at 4 (trace) only.
DROPPED = {
    "--host": 1,
    "--port": 1,
    "--load-mode": 1,
    "-lm": 1,
    "--api-key-file": 1,
    "--metrics": 0,
    "-lv": 1,
    "--verbosity": 1,
    "--log-verbosity": 1,
}
COLUMNS = ("server", "mode", "cache", "model_gb", "load_s", "gb_per_s", "mode_logged", "expected_cold_s")


@dataclass
class LoadRow:
    server: str
    mode: str
    # "cold" (page cache dropped just before) or "warm".
    cache: str
    model_gb: float | None = None
    load_s: float | None = None
    gb_per_s: float | None = None
    # What llama.cpp says it used: "(load_mode = X)" of its load_tensors line.
    mode_logged: str | None = None
    expected_cold_s: float | None = None
    # Per cell left None, or a warning (mlock refused, direct I/O fell back): why.
    why: dict[str, str] = field(default_factory=dict)


def timestamp(line: str) -> float | None:
    """Seconds since the server started, from a --log-timestamps line; None for a line without one."""
    found = STAMP.search(ANSI.sub("", line))
    if not found:
        return None
    minutes, seconds, ms, us = (int(found.group(i)) for i in range(1, 5))
    return minutes * 60 + seconds + ms / 1e3 + us / 1e6


def load_seconds(lines: list[str]) -> tuple[float | None, str | None]:
    """(seconds from the first model line to llama-server's `model loaded`, None) or (None, why)."""
    begin = None
    for line in lines:
        found = STAMP.search(ANSI.sub("", line))
        if not found:
            continue
        at, message = timestamp(line), found.group(5)
        if begin is None and any(mark in message for mark in BEGIN_MARKS):
            begin = at
        elif begin is not None and message.startswith("srv ") and message.endswith(END_MARK):
            return round(at - begin, 6), None
    if begin is None:
        return None, "no model load in the server's log (no --log-timestamps line of load_model)"
    return None, "the server did not log 'model loaded'"


def mode_logged(lines: list[str]) -> str | None:
    for line in lines:
        found = MODE_USED.search(line)
        if found:
            return found.group(1)
    return None


def row_from(server: str, mode: str, cache: str, size: int | None, output: str, expected: float | None) -> LoadRow:
    """One row from the host script's output (its marks and the server's log lines) and the model's size."""
    lines = output.splitlines()
    row = LoadRow(server, mode, cache, expected_cold_s=expected)
    row.model_gb = round(size / GB, 3) if size else None
    if size is None:
        row.why["model_gb"] = "the model's files could not be measured on the host"
    row.mode_logged = mode_logged(lines)
    marks = [line.split(" ", 1)[1] for line in lines if line.startswith(MARK + " ")]
    row.load_s, why = load_seconds(lines)
    if why:
        detail = "; ".join(marks) or "no output"
        row.why["load_s"] = f"{why} ({detail})"
    if any("failed to mlock" in line for line in lines):
        row.why["mlock"] = "mlock refused (the user's RLIMIT_MEMLOCK / wire limit): the weights are not locked"
    if any("Falling back to buffered I/O" in line for line in lines):
        row.why["dio"] = "direct I/O refused by the filesystem: llama.cpp read it buffered"
    if row.load_s and size:
        row.gb_per_s = round(size / GB / row.load_s, 3)
    elif row.load_s == 0 and size:
        row.why["gb_per_s"] = "the load took less than the log's resolution"
    return row


def fastest(rows: list[LoadRow]) -> dict[str, str]:
    """The mode with the most GB/s, per server, among the modes that loaded."""
    best: dict[str, LoadRow] = {}
    for row in rows:
        if row.gb_per_s is not None and (row.server not in best or row.gb_per_s > best[row.server].gb_per_s):
            best[row.server] = row
    return {name: row.mode for name, row in best.items()}


def table(rows: list[LoadRow]) -> list[str]:
    def cell(value) -> str:
        return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    head = ("server", "load mode", "cache", "model GB", "load s", "GB/s", "llama.cpp says", "manual: cold s")
    lines = [head]
    lines += [
        (
            r.server,
            r.mode,
            r.cache,
            cell(r.model_gb),
            cell(r.load_s),
            cell(r.gb_per_s),
            cell(r.mode_logged),
            cell(r.expected_cold_s),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  ".join(f"{v:<{widths[i]}}" for i, v in enumerate(line)).rstrip() for line in lines]
    best = fastest(rows)
    by_key = {(r.server, r.mode): r for r in rows}
    for name in dict.fromkeys(r.server for r in rows):
        if name in best:
            r = by_key[(name, best[name])]
            out.append(f"fastest load mode for {name}: {best[name]} ({r.gb_per_s:g} GB/s, {r.load_s:g} s)")
        else:
            out.append(f"fastest load mode for {name}: none measured")
    out += [f"  {r.server} {r.mode} {cell_}: {why}" for r in rows for cell_, why in r.why.items()]
    return out


def to_csv(rows: list[LoadRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*COLUMNS, "why"])
    for r in rows:
        values = asdict(r)
        writer.writerow(
            [
                *("" if values[c] is None else values[c] for c in COLUMNS),
                "; ".join(f"{k}: {v}" for k, v in r.why.items()),
            ]
        )
    return out.getvalue()


# --- on the host ---------------------------------------------------------------------------------


def throwaway_argv(cfg: KittyConfig, name: str, srv: ModelServer, mode: str) -> list[str]:
    """The server's own command line with `mode`, on a free loopback port, timestamped, without key or metrics."""
    argv = server_args.arguments(cfg, name, srv, _binary(cfg), cfg.paths.models_dir)
    kept, i = [argv[0]], 1
    while i < len(argv):
        flag = flags.flag_name(argv[i])
        if flag in DROPPED and "=" not in argv[i]:
            i += 1 + DROPPED[flag]
            continue
        kept.append(argv[i])
        i += 1
    return [
        *kept,
        *("--host", "127.0.0.1", "--port", "0", "--load-mode", mode),
        *("--log-prefix", "--log-timestamps", "--log-verbosity", "4"),
    ]


def _binary(cfg: KittyConfig) -> str:
    from tasks.inference import llamacpp

    return llamacpp.binary(cfg)


def model_files(cfg: KittyConfig, srv: ModelServer) -> list[str]:
    """The files the load mode reads: the model's own (the projector is clip's, loaded its own way)."""
    model = cfg.models[srv.model]
    return [f"{cfg.paths.models_dir.rstrip('/')}/{model.dir}/{file.name}" for file in model.files]


def size_command(paths: list[str]) -> str:
    """POSIX sh: the summed size in bytes of `paths`, or `missing`."""
    quoted = " ".join(shlex.quote(p) for p in paths)
    return f't=0; for f in {quoted}; do s=$(wc -c < "$f") || {{ echo missing; exit 0; }}; t=$((t + s)); done; echo $t'


def load_command(argv: list[str], env: dict[str, str], user: str | None, timeout: int) -> str:
    """POSIX sh: run `argv` in the background (as `user` when given), wait for `model loaded`, its exit or
    `timeout` seconds, stop it by its own PID, print the log's load lines and remove the log.

    The server's own PID: a `sh` that prints its PID into the log and execs the server (so keeps that PID).
    `$!` is sudo's when it runs as another user, and a SIGKILL of sudo would leave the server running."""
    own_pid = 'echo "' + MARK + '-PID $$"; exec "$@"'
    run = f"sh -c {shlex.quote(own_pid)} sh {shlex.join(argv)}"
    if env:
        run = f"env {' '.join(shlex.quote(f'{k}={v}') for k, v in env.items())} {run}"
    if user:
        run = f"sudo -n -u {shlex.quote(user)} -- {run}"
    marks = "|".join(re.escape(m) for m in (*BEGIN_MARKS, END_MARK, "loading model tensors"))
    warn = "failed to mlock|Falling back to buffered|error"
    return (
        f'log=$(mktemp "${{TMPDIR:-/tmp}}/kitty-load-bench.XXXXXX") || exit 1; chmod 644 "$log"; '
        f'{run} >"$log" 2>&1 & pid=$!; '
        f"end=$(($(date +%s) + {int(timeout)})); "
        f'while ! grep -q {shlex.quote("srv .*" + END_MARK)} "$log"; do '
        f'if ! kill -0 "$pid" 2>/dev/null; then echo "{MARK} exited before it loaded"; break; fi; '
        f'if [ "$(date +%s)" -ge "$end" ]; then echo "{MARK} not loaded within {int(timeout)} s"; break; fi; '
        "sleep 0.05; done; "
        f"server=$(sed -n 's/^{MARK}-PID \\([0-9][0-9]*\\)$/\\1/p' \"$log\" | head -n 1); "
        'for p in $server $pid; do kill -TERM "$p" 2>/dev/null; done; i=0; '
        'while kill -0 "${server:-$pid}" 2>/dev/null && [ "$i" -lt 100 ]; do i=$((i + 1)); sleep 0.1; done; '
        'for p in $server $pid; do ! kill -0 "$p" 2>/dev/null || kill -KILL "$p"; done; wait "$pid" 2>/dev/null; '
        f'grep -E {shlex.quote(marks + "|" + warn)} "$log" | tail -n 40; rm -f "$log"'
    )


def stop_command(cfg: KittyConfig, plat: Platform, name: str) -> str:
    return control.stop_command(plat, servers.job(cfg, plat, name))


def start_command(cfg: KittyConfig, plat: Platform, name: str) -> str:
    return control.start_command(plat, servers.job(cfg, plat, name))


def measure(
    host, cfg: KittyConfig, plat: Platform, run, drop_cache: str, expected: dict, time_to_healthy
) -> list[LoadRow]:
    """Every enabled server in every mode of cfg.bench.load_modes_measured; `run(host, command, sudo, timeout)`
    is bench.py's runner, `time_to_healthy(url, timeout, start)` its clock. Each server is started again (and
    waited for) before the next one is stopped."""

    rows: list[LoadRow] = []
    user = layout.service_user(cfg, plat)
    cache_refused: str | None = None
    for name, srv in cfg.enabled_servers().items():
        cold = expected.get(name, {}).get("cold_s")
        if srv.rpc_workers:
            for mode in cfg.bench.load_modes_measured:
                row = LoadRow(name, mode, "-", expected_cold_s=cold)
                row.why["load_s"] = "n/a: split over llama.cpp RPC workers, whose load is the network's"
                rows.append(row)
            continue
        out = run(host, size_command(model_files(cfg, srv)), sudo=plat.sudo, timeout=60)[1].strip()
        size = int(out.splitlines()[-1]) if out and out.splitlines()[-1].isdigit() else None
        stopped, said = run(host, stop_command(cfg, plat, name), sudo=plat.sudo, timeout=srv.health_timeout + 120)
        try:
            if not stopped:
                # A second copy beside the running one could exhaust the memory: no throwaway then.
                for mode in cfg.bench.load_modes_measured:
                    row = LoadRow(name, mode, "-", expected_cold_s=cold)
                    row.why["load_s"] = f"the server could not be stopped first: {said.strip()[-160:] or 'no output'}"
                    rows.append(row)
                continue
            for mode in cfg.bench.load_modes_measured:
                cache = "warm"
                if cache_refused is None:
                    dropped, said = run(host, drop_cache, sudo=plat.sudo, timeout=120)
                    if dropped:
                        cache = "cold"
                    else:
                        cache_refused = f"{drop_cache}: {said.strip()[-120:] or 'refused'}"
                argv = throwaway_argv(cfg, name, srv, mode)
                # The script runs as root (bench's sudo): the throwaway runs as the server's own user.
                as_user = None if user == "root" else user
                script = load_command(argv, dict(srv.env), as_user, srv.health_timeout)
                _, output = run(host, script, sudo=plat.sudo, timeout=srv.health_timeout + 60)
                row = row_from(name, mode, cache, size, output, cold)
                if cache == "warm" and cache_refused:
                    row.why["cache"] = f"warm: the page cache could not be dropped ({cache_refused})"
                rows.append(row)
        finally:
            script = time_to_healthy(servers.health_url(srv), srv.health_timeout, start_command(cfg, plat, name))
            run(host, script, sudo=plat.sudo, timeout=srv.health_timeout + 60)
    return rows
