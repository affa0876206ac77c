"""The benchmark: how each enabled model server performs on this host, beside the manual's expected figures.

Per server: start to healthy, cold (page cache dropped first where the OS
allows: `purge` on macOS, `drop_caches` on Linux) and warm; prompt and
generation speed from llama-server's own `timings` in a /completion answer to
a fixed prompt; resident memory of the process, and its GPU memory (nvidia-smi
per PID on CUDA, the GPU buffers llama.cpp logged loading on Metal; "n/a: no
GPU" on a CPU build). The page cache and the restarts are the only things it
touches: the page cache only with a restart. It changes nothing on the host, except that with
`--data bench_restart=true` each server is restarted through its supervisor,
one at a time, each waited for. A cell that cannot be measured is None, and
`why` says why. With `--data bench_load_modes=true` it also times each
server's model load in every load mode (tasks/runbook/bench_load.py): each server is
stopped meanwhile, then started again and waited for.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import FunctionCommand, StringCommand, deploy, operation

from tasks.config import KittyConfig
from tasks.engine.operations import connector_arguments
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.inference import servers
from tasks.runbook import bench_load
from tasks.supervise import control

# The manual's "Performance Benchmarks" chapter, per server role: start to healthy (first start,
# later starts) in seconds, steady-state RAM and VRAM in GB. None: the manual gives no figure.
EXPECTED = {
    "q4": {"cold_s": 45, "warm_s": 30, "rss_gb": 18, "gpu_gb": 16},
    "f16": {"cold_s": 330, "warm_s": 285, "rss_gb": 145, "gpu_gb": 80},
    "vision": {"cold_s": 135, "warm_s": 110, "rss_gb": 20, "gpu_gb": 18},
}
COLUMNS = (
    "server",
    "model",
    "cold_s",
    "warm_s",
    "prompt_tps",
    "gen_tps",
    "rss_gb",
    "gpu_gb",
    "expected_cold_s",
    "expected_warm_s",
    "expected_rss_gb",
    "expected_gpu_gb",
)
# llama.cpp's load log: "<backend>_Mapped model buffer size = N MiB", "<backend> KV buffer size = N MiB",
# "<backend> compute buffer size = N MiB". GPU backends: Metal (MTL0, Metal), CUDA0, ...
BUFFER = re.compile(
    r"\b(Metal|MTL\d*|CUDA\d+|Vulkan\d*|ROCm\d+)\w*\s+(?:model |KV |compute )?buffer size =\s+([\d.]+) MiB"
)
# Where a model load begins in a server log: llama.cpp's loader (older builds), llama-server's own line.
LOAD_MARKS = ("llama_model_loader: loaded meta data", "load_model: loading model")
NOW_MS = "perl -MTime::HiRes=time -e 'printf \"%d\\n\", time * 1000'"


@dataclass
class Row:
    server: str
    model: str
    cold_s: float | None = None
    warm_s: float | None = None
    prompt_tps: float | None = None
    gen_tps: float | None = None
    rss_gb: float | None = None
    gpu_gb: float | None = None
    expected_cold_s: float | None = None
    expected_warm_s: float | None = None
    expected_rss_gb: float | None = None
    expected_gpu_gb: float | None = None
    # Per cell left None: why.
    why: dict[str, str] = field(default_factory=dict)


def new_row(name: str, model: str) -> Row:
    expected = EXPECTED.get(name, {})
    row = Row(server=name, model=model, **{f"expected_{k}": v for k, v in expected.items()})
    if not expected:
        row.why["expected"] = f"the manual gives no figures for a server named {name!r}"
    return row


def timings(body: str) -> tuple[float | None, float | None]:
    """(prompt tokens/s, generated tokens/s) from llama-server's /completion answer."""
    try:
        found = json.loads(body).get("timings") or {}
    except (ValueError, AttributeError):
        return None, None

    def speed(value):
        return round(value, 1) if isinstance(value, (int, float)) else None

    return speed(found.get("prompt_per_second")), speed(found.get("predicted_per_second"))


def gpu_gib_from_log(lines: list[str]) -> float | None:
    """GPU buffers of the last model load in a server log, in GiB; None when none (a CPU build)."""
    # A log holds every start since its last rotation: count the last load only.
    starts = [i for i, line in enumerate(lines) if any(mark in line for mark in LOAD_MARKS)]
    last_load = lines[starts[-1] :] if starts else lines
    sizes = [float(m.group(2)) for line in last_load for m in [BUFFER.search(line)] if m]
    return round(sum(sizes) / 1024, 3) if sizes else None


def table(rows: list[Row]) -> list[str]:
    def cell(value) -> str:
        return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    head = (
        "server",
        "cold s",
        "warm s",
        "prompt t/s",
        "gen t/s",
        "RSS GB",
        "GPU GB",
        "manual: cold/warm s, RAM/VRAM GB",
    )
    lines = [head]
    for r in rows:
        manual = (
            f"{cell(r.expected_cold_s)}/{cell(r.expected_warm_s)}, {cell(r.expected_rss_gb)}/{cell(r.expected_gpu_gb)}"
        )
        lines.append(
            (
                r.server,
                cell(r.cold_s),
                cell(r.warm_s),
                cell(r.prompt_tps),
                cell(r.gen_tps),
                cell(r.rss_gb),
                cell(r.gpu_gb),
                manual,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return ["  ".join(f"{v:<{widths[i]}}" for i, v in enumerate(line)).rstrip() for line in lines]


def to_csv(rows: list[Row]) -> str:
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


def write(rows: list[Row], directory: str, host_name: str, meta: dict) -> tuple[Path, Path]:
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", host_name).strip("_") or "host"
    json_path, csv_path = folder / f"bench-{stem}.json", folder / f"bench-{stem}.csv"
    json_path.write_text(json.dumps({**meta, "servers": [asdict(r) for r in rows]}, indent=2) + "\n")
    csv_path.write_text(to_csv(rows))
    return json_path, csv_path


# --- on the host ---------------------------------------------------------------------------------


def restart_command(cfg: KittyConfig, plat: Platform, name: str) -> str:
    return control.restart_command(plat, servers.job(cfg, plat, name))


def pid_command(cfg: KittyConfig, plat: Platform, name: str) -> str:
    return control.pid_command(plat, servers.job(cfg, plat, name))


def time_to_healthy(url: str, timeout: int, start: str = "true") -> str:
    """Host-side: run `start`, then print the milliseconds from just before it until `url` answers 200;
    `timeout` on giving up, `start failed` when `start` fails. The clock starts before the restart, so a
    supervisor that returns only once the program runs does not hide its start time."""
    return (
        f"t0=$({NOW_MS}); end=$((t0 + {timeout * 1000})); "
        f"{start} || {{ echo 'start failed'; exit 0; }}; "
        f"until curl -sf -o /dev/null --max-time 2 {shlex.quote(url)}; do "
        f'[ "$({NOW_MS})" -lt "$end" ] || {{ echo timeout; exit 0; }}; sleep 0.1; done; '
        f"echo $(($({NOW_MS}) - t0))"
    )


def gpu_mib_from_nvidia_smi(output: str, pid: int) -> float | None:
    """`nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits`: the MiB of `pid`."""
    used = [
        float(fields[1])
        for fields in (line.replace(" ", "").split(",") for line in output.splitlines())
        if len(fields) == 2 and fields[0] == str(pid) and fields[1].replace(".", "", 1).isdigit()
    ]
    return sum(used) if used else None


def no_gpu_reason(backend: str, n_gpu_layers: int) -> str | None:
    """Why a server has no GPU memory to measure: a CPU build, or no layer offloaded."""
    if backend == "cpu":
        return "n/a: no GPU (llama.cpp built for the CPU backend)"
    if n_gpu_layers == 0:
        return "n/a: no GPU (n_gpu_layers is 0)"
    return None


@operation(is_idempotent=False)
def measure(cfg: KittyConfig, plat: Platform):
    """Measure every enabled server (see the module's docstring); prints the table, writes JSON and CSV."""
    if not host.state.is_executing:
        restarting = "restarting each server, one at a time" if cfg.bench.restart else "restarting nothing"
        if cfg.bench.load_modes:
            modes = ", ".join(cfg.bench.load_modes_measured)
            restarting += f"; timing the model loads ({modes}), each server stopped meanwhile"
        host.noop(f"measured on the host when run ({restarting})")
        return
    yield FunctionCommand(_measure, (cfg, plat), {})


def _run(host, command: str, sudo: bool = False, timeout: int = 120) -> tuple[bool, str]:
    """Run through the connector with the operation's own arguments (its sudo password): a FunctionCommand
    is not given them. Output: stdout and stderr, as the host printed them."""
    arguments = connector_arguments(host, _sudo=sudo, _timeout=timeout)
    ok, output = host.run_shell_command(StringCommand(command), **arguments)
    return ok, "\n".join(output.output_lines)


def _restart_and_time(host, cfg: KittyConfig, plat: Platform, name: str) -> tuple[float | None, str | None]:
    srv = cfg.servers[name]
    script = time_to_healthy(servers.health_url(srv), srv.health_timeout, restart_command(cfg, plat, name))
    _, out = _run(host, script, sudo=plat.sudo, timeout=srv.health_timeout + 60)
    last = out.strip().splitlines()[-1] if out.strip() else ""
    if last.isdigit():
        return round(int(last) / 1000, 2), None
    if last == "timeout":
        return None, f"not healthy within {srv.health_timeout} s of its restart"
    return None, f"restart failed: {out.strip()[-200:]}"


def _completion(host, srv, prompt: str, n_predict: int) -> str:
    body = json.dumps({"prompt": prompt, "n_predict": n_predict, "temperature": 0, "cache_prompt": False})
    url = servers.health_url(srv).removesuffix("/health") + "/completion"
    curl = f"curl -s --max-time 300 -H 'Content-Type: application/json' -d {shlex.quote(body)} {shlex.quote(url)}"
    if srv.api_key_file:
        # The key goes to curl on stdin (-K -): never on a command line, in ps or in pyinfra's output.
        quoted = shlex.quote(srv.api_key_file)
        key = f"$(cat {quoted} 2>/dev/null || sudo -n cat {quoted})"
        curl = f'printf \'header = "Authorization: Bearer %s"\\n\' "{key}" | {curl} -K -'
    return _run(host, curl, timeout=320)[1]


def _measure(state, host, cfg: KittyConfig, plat: Platform) -> bool:
    rows = []
    backend = plat.llamacpp_backend_flags(cfg.llamacpp.backend)[0]
    # Whether the page cache can be dropped is a property of the host (a container cannot): asked once.
    cache_refused = None
    for name, srv in cfg.enabled_servers().items():
        row = new_row(name, srv.model)
        if cfg.bench.restart:
            if cache_refused is None:
                dropped, out = _run(host, plat.drop_caches_command, sudo=plat.sudo)
            else:
                dropped, out = False, ""
            if dropped:
                row.cold_s, why = _restart_and_time(host, cfg, plat, name)
                if why:
                    row.why["cold_s"] = why
            else:
                cache_refused = cache_refused or (
                    f"n/a: this host does not let the page cache be dropped "
                    f"({plat.drop_caches_command}: {out.strip()[-120:] or 'refused'})"
                )
                row.why["cold_s"] = cache_refused
            row.warm_s, why = _restart_and_time(host, cfg, plat, name)
            if why:
                row.why["warm_s"] = why
        else:
            row.why["cold_s"] = row.why["warm_s"] = "not restarted: run with --data bench_restart=true"
        # One short request first: the first after a start pays for warming the model's pages.
        _completion(host, srv, cfg.bench.prompt, 1)
        answer = _completion(host, srv, cfg.bench.prompt, cfg.bench.n_predict)
        row.prompt_tps, row.gen_tps = timings(answer)
        if row.prompt_tps is None:
            row.why["prompt_tps"] = row.why["gen_tps"] = (
                f"no timings in the /completion answer: {answer.strip()[:120]!r}"
            )
        pid = _run(host, pid_command(cfg, plat, name), sudo=plat.sudo)[1].strip()
        pid = int(pid) if pid.isdigit() and pid != "0" else None
        if pid:
            rss = _run(host, f"ps -o rss= -p {pid}")[1].strip()
            row.rss_gb = round(int(rss) / 1024 / 1024, 3) if rss.isdigit() else None
        if row.rss_gb is None:
            row.why["rss_gb"] = f"no running process for server {name}"
        row.gpu_gb, why = _gpu(host, cfg, plat, name, backend, pid)
        if why:
            row.why["gpu_gb"] = why
        rows.append(row)
    for line in table(rows) + notes(rows):
        host.log(line, logger.info)
    load_rows = []
    if cfg.bench.load_modes:
        load_rows = bench_load.measure(host, cfg, plat, _run, plat.drop_caches_command, EXPECTED, time_to_healthy)
        for line in bench_load.table(load_rows):
            host.log(line, logger.info)
    meta = {
        "host": host.name,
        "os": plat.os,
        "backend": backend,
        "restarted": cfg.bench.restart,
        "prompt": cfg.bench.prompt,
        "n_predict": cfg.bench.n_predict,
    }
    if cfg.bench.load_modes:
        meta["load_modes"] = [asdict(r) for r in load_rows]
        meta["fastest_load_mode"] = bench_load.fastest(load_rows)
    paths = write(rows, cfg.bench.report_dir, host.name, meta)
    if cfg.bench.load_modes:
        load_csv = paths[1].with_name(paths[1].stem + "-load-modes.csv")
        load_csv.write_text(bench_load.to_csv(load_rows))
        paths = (*paths, load_csv)
    host.log(f"written: {', '.join(str(p) for p in paths)}", logger.info)
    return True


def _gpu(host, cfg: KittyConfig, plat: Platform, name: str, backend: str, pid: int | None):
    """(GiB, None) or (None, why)."""
    reason = no_gpu_reason(backend, cfg.servers[name].n_gpu_layers)
    if reason:
        return None, reason
    if backend == "cuda":
        if not pid:
            return None, f"no running process for server {name}"
        query = "nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits"
        mib = gpu_mib_from_nvidia_smi(_run(host, query)[1], pid)
        return (round(mib / 1024, 3), None) if mib is not None else (None, "nvidia-smi lists no memory for its PID")
    log = _run(host, f"tail -n 2000 {shlex.quote(layout.server_log(cfg, name))}", sudo=plat.sudo)[1]
    gib = gpu_gib_from_log(log.splitlines())
    if gib is None:
        return None, f"no {backend} buffer sizes in the server's log since its last start"
    return gib, None


def notes(rows: list[Row]) -> list[str]:
    """Under the table: why each empty cell is empty, so a '-' never reads as a zero."""
    return [f"  {r.server} {cell}: {why}" for r in rows for cell, why in r.why.items()]


@deploy("Benchmark")
def run(cfg: KittyConfig, plat: Platform) -> None:
    measure(name="Measure the model servers", cfg=cfg, plat=plat)
