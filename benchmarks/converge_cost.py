#!/usr/bin/env python3
"""What a converge of the sandbox host costs: wall time, operations, SSH round trips.

    .venv/bin/python benchmarks/converge_cost.py [--name kitty-sb] [--ssh-port 2222] [--runs 3]
                                                 [--flag] [--big-model] [--cold] [--session-each]
                                                 [--out FILE.json]

Against a running, converged sandbox host (sandbox/converge.py), with the port offset of
its sandbox in KITTY_SANDBOX_PORT_OFFSET (as sandbox/converge.py needs it):
  no-op       the converge of a converged host, `--runs` times (median printed)
  --flag      one flag on one server (summary's ctx_size halved), then back: wall time
              (the converge waits for the restarted server's health: time to healthy),
              servers restarted
  --big-model the no-op with a 10 GB model file registered (a sparse file and a matching stamp,
              prefetched, used by no server; removed afterwards): stat only, it must match the
              no-op within noise
  --cold      first a brand-new sandbox (`--fresh`: the mirrors, then the host replaced) converged
              with warm caches (ccache, hf mirror, images); then the rest against it
  --session-each  the no-op again with the fact shell off (KITTY_FACT_SHELL=0: an SSH session per
              fact, as plain pyinfra), to compare
The no-op cases run `--runs` timed converges, plain as an operator runs them, then one more
with `--debug` that counts the SSH sessions opened (`round_trips`: one "Waiting for exit
status" per command run in a session of its own, plus the fact shell's one session), the
commands sent over the fact shell (`fact_shell_commands`, tasks/engine/fact_shell.py) and uploads
("Attempting upload"). A timed run that changed
something (an image rebuilt meanwhile by another sandbox on the same engine) is listed but
left out of `wall_s_median_unchanged`. The phases of a run come from when its output lines
arrive: connected, operations planned ("Beginning operation run"), done. Prints one JSON
object (and writes it with --out).
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
# Output lines that end a phase of the run: (phase, pattern), first match wins.
PHASES = [
    ("connected_s", re.compile(r"\] Connected")),
    ("planned_s", re.compile(r"--> Beginning operation run")),
]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _run(args: list[str], env: dict) -> tuple[int, str, float, dict]:
    """Run pyinfra, timing when each phase's line arrives. Returns (exit, output, wall, phases)."""
    phases: dict[str, float] = {}
    lines = []
    start = time.monotonic()
    with subprocess.Popen(
        args,
        cwd=ROOT,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            for phase, pattern in PHASES:
                if phase not in phases and pattern.search(line):
                    phases[phase] = round(time.monotonic() - start, 2)
        code = proc.wait(timeout=3600)
    return code, "".join(lines), time.monotonic() - start, phases


def run_converge(name: str, overrides: dict | None = None, debug: bool = False, env: dict | None = None) -> dict:
    args = [*sandbox.PYINFRA, "--group-data", str(sandbox.GROUP_DATA)]
    with tempfile.TemporaryDirectory() as folder:
        if overrides:
            (Path(folder) / "all.py").write_text("".join(f"{k} = {v!r}\n" for k, v in overrides.items()))
            args += ["--group-data", folder]
        args += ["-y", *(["--debug"] if debug else [])]
        env = {**os.environ, **sandbox.sandbox_env(name), **sandbox.QUIET_HF, **(env or {})}
        code, out, wall, phases = _run(args, env)
    starts = re.findall(r"--> Starting operation: (.+?)\s*$", out, re.MULTILINE)
    # Supervised programs' operations are named "<program>: <action> (<why>)" (tasks/supervise).
    restarted = sorted(
        {m.group(1) for op in starts if (m := re.search(r"(server \S+): (?:restart|reload|start)\b", op))}
    )
    result = {
        "exit": code,
        "wall_s": round(wall, 2),
        **phases,
        "operations": len(starts),
        "changed": len(re.findall(r"\] Success", out)),
        "servers_restarted": restarted,
    }
    if debug:
        result["round_trips"] = out.count("Waiting for exit status") + out.count("Fact shell opened")
        result["fact_shell_commands"] = out.count("Fact shell exit status")
        result["uploads"] = out.count("Attempting upload")
        result["facts"] = len(re.findall(r"Getting fact: ", out))
    if code != 0:
        result["tail"] = out.strip().splitlines()[-5:]
    return result


def measured(name: str, runs: int, overrides: dict | None = None, env: dict | None = None) -> dict:
    """`runs` timed converges and one --debug converge for the counts."""
    timed = [run_converge(name, overrides, env=env) for _ in range(runs)]
    counted = run_converge(name, overrides, debug=True, env=env)
    clean = [r["wall_s"] for r in timed if not r["changed"]]
    return {
        **timed[-1],
        "wall_s_runs": [r["wall_s"] for r in timed],
        # A no-op changes nothing: anything else here (an image rebuilt meanwhile) spoils the timing.
        "changed_runs": [r["changed"] for r in timed],
        "wall_s_median": statistics.median(r["wall_s"] for r in timed),
        "wall_s_median_unchanged": statistics.median(clean) if clean else None,
        "round_trips": counted["round_trips"],
        "fact_shell_commands": counted["fact_shell_commands"],
        "uploads": counted["uploads"],
        "facts": counted["facts"],
        "debug_run_changed": counted["changed"],
        "debug_run_exit": counted["exit"],
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
    owner = ssh(name, f"stat -c %U {cfg.paths.models_dir}").strip()
    ssh(
        name,
        f"sudo mkdir -p {folder}/.kitty && sudo truncate -s {BIG['size']} {path} && "
        f"st=$(stat -c '%s %Y' {path}) && echo \"{FAKE_SHA} $st\" | sudo tee {folder}/.kitty/{BIG['name']}.stamp "
        f">/dev/null && sudo chown -R {owner} {folder}",
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


def unregister_big_model(name: str) -> None:
    cfg = config.load(data())
    ssh(name, f"sudo rm -rf {cfg.paths.models_dir}/{BIG['dir']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="kitty-sb")
    parser.add_argument("--ssh-port", type=int, default=2222)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flag", action="store_true")
    parser.add_argument("--big-model", action="store_true")
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--session-each", action="store_true")
    parser.add_argument("--out", type=Path)
    a = parser.parse_args()
    report: dict = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, {platform.machine()}",
        "sandbox": a.name,
        "port_offset": int(os.environ.get("KITTY_SANDBOX_PORT_OFFSET", "0")),
    }
    if a.cold:
        sandbox.ensure_sandbox(a.name, a.ssh_port, fresh=True)
        report["cold"] = run_converge(a.name)
    report["noop"] = measured(a.name, a.runs)
    if a.session_each:
        report["noop_session_each"] = measured(a.name, a.runs, env={"KITTY_FACT_SHELL": "0"})
    if a.flag:
        servers = data()["kitty_servers"]
        servers["summary"]["ctx_size"] = servers["summary"]["ctx_size"] // 2
        report["one_flag"] = run_converge(a.name, {"kitty_servers": servers})
        report["one_flag_back"] = run_converge(a.name)
    if a.big_model:
        overrides = register_big_model(a.name)
        try:
            report["noop_10gb_model"] = measured(a.name, a.runs, overrides)
        finally:
            unregister_big_model(a.name)
    text = json.dumps(report, indent=2)
    if a.out:
        a.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
