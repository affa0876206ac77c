#!/usr/bin/env python3
"""What a converge of the sandbox host costs: wall time, operations, SSH round trips.

    .venv/bin/python benchmarks/converge_cost.py [--name kitty-sb] [--runs 3] [--flag] [--big-model] [--cold]

Against a running, converged sandbox host (sandbox/converge.py):
  no-op       the converge of a converged host, `--runs` times (median printed)
  --flag      one flag on one server (summary's ctx_size), then back: time, servers restarted
  --big-model the no-op with a 10 GB model file registered (a sparse file and a matching stamp,
              prefetched, used by no server): stat only, it must match the no-op within noise
  --cold      a brand-new sandbox (--fresh) converged with warm caches (ccache, hf mirror, images)
Round trips are counted from pyinfra's --debug output: one "Waiting for exit status" per command
(facts and operations), one "Attempting upload" per upload. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox import converge as sandbox  # noqa: E402
from tasks import config  # noqa: E402

BIG = {"dir": "big-test", "name": "big-test-10g.gguf", "size": 10 * 1024**3}
FAKE_SHA = "0" * 64


def run_converge(name: str, overrides: dict | None = None, extra: tuple[str, ...] = ()) -> dict:
    args = [*sandbox.PYINFRA, "--group-data", str(sandbox.GROUP_DATA)]
    with tempfile.TemporaryDirectory() as folder:
        if overrides:
            (Path(folder) / "all.py").write_text("".join(f"{k} = {v!r}\n" for k, v in overrides.items()))
            args += ["--group-data", folder]
        args += ["-y", "--debug", *extra]
        env = {**os.environ, **sandbox.sandbox_env(name), **sandbox.QUIET_HF}
        start = time.monotonic()
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
        wall = time.monotonic() - start
    out = done.stdout + done.stderr
    starts = re.findall(r"--> Starting operation: (.+?)\s*$", out, re.MULTILINE)
    restarted = sorted(set(re.findall(r"server (\S+)\s+(?:restart|reload)\b", out)))
    return {
        "exit": done.returncode,
        "wall_s": round(wall, 2),
        "operations": len(starts),
        "changed": len(re.findall(r"\] Success", out)),
        "round_trips": out.count("Waiting for exit status"),
        "uploads": out.count("Attempting upload"),
        "servers_restarted": restarted,
    }


def data() -> dict:
    return config.read_group_data(ROOT / "group_data", sandbox.GROUP_DATA)


def ssh(name: str, command: str) -> str:
    cfg_file = ROOT / ".sandbox" / name / "ssh_config"
    return subprocess.run(
        ["ssh", "-F", str(cfg_file), name, command], capture_output=True, text=True, check=True
    ).stdout


def register_big_model(name: str) -> dict:
    """A sparse 10 GB file and a stamp that matches its size and mtime: what a verified model leaves."""
    cfg = config.load(data())
    folder = f"{cfg.paths.models_dir}/{BIG['dir']}"
    path = f"{folder}/{BIG['name']}"
    ssh(
        name,
        f"sudo mkdir -p {folder}/.kitty && sudo truncate -s {BIG['size']} {path} && "
        f"st=$(stat -c '%s %Y' {path}) && echo \"{FAKE_SHA} $st\" | sudo tee {folder}/.kitty/{BIG['name']}.stamp "
        f">/dev/null && sudo chown -R $(stat -c %U {cfg.paths.models_dir}) {folder}",
    )
    models = dict(data()["kitty_models"])
    models["big-test"] = {
        "repo": "kitty-test/big-test-GGUF",
        "revision": "0" * 40,
        "dir": BIG["dir"],
        "kind": "text",
        "prefetch": True,
        "files": [{"name": BIG["name"], "size": BIG["size"], "sha256": FAKE_SHA}],
    }
    return {"kitty_models": models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="kitty-sb")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flag", action="store_true")
    parser.add_argument("--big-model", action="store_true")
    parser.add_argument("--cold", action="store_true")
    a = parser.parse_args()
    report: dict = {"machine": f"{platform.node()} {os.cpu_count()} cores {platform.machine()}", "sandbox": a.name}
    if a.cold:
        subprocess.run([*sandbox.SANDBOX, "start", "--name", a.name, "--replace"], check=True)
        report["cold"] = run_converge(a.name)
    noops = [run_converge(a.name) for _ in range(a.runs)]
    report["noop"] = {**noops[-1], "wall_s_runs": [r["wall_s"] for r in noops]}
    report["noop"]["wall_s_median"] = statistics.median(r["wall_s"] for r in noops)
    if a.flag:
        servers = data()["kitty_servers"]
        servers["summary"]["ctx_size"] = servers["summary"]["ctx_size"] // 2
        report["one_flag"] = run_converge(a.name, {"kitty_servers": servers})
        report["one_flag_back"] = run_converge(a.name)
    if a.big_model:
        overrides = register_big_model(a.name)
        runs = [run_converge(a.name, overrides) for _ in range(a.runs)]
        report["noop_10gb_model"] = {**runs[-1], "wall_s_runs": [r["wall_s"] for r in runs]}
        report["noop_10gb_model"]["wall_s_median"] = statistics.median(r["wall_s"] for r in runs)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
