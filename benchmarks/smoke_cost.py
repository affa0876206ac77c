#!/usr/bin/env python3
"""What proving a new llama.cpp build adds to an upgrade, against what finding a bad build by a restart costs.

    .venv/bin/python benchmarks/smoke_cost.py [--name kitty-sb] [--runs 5] [--out FILE.json]

Against a running, converged sandbox host (sandbox/converge.py). Over SSH, on the host:
  smoke_s     the smoke test of the build `current` points at, as the deploy runs it
              (<opt_dir>/llama.cpp/smoke.sh with the tiny model, the servers' GPU layers), `--runs`
              times: the time a good build's upgrade spends proving itself
  restart_s   each enabled server restarted through systemd and waited for until /health answers
              200, `--runs` times: what one server's restart costs on this host, and so what a bad
              build found by restarting costs at least twice per server (onto it, and back)
Prints one JSON object (and writes it with --out). The manual's Mac's arithmetic is in the README
("A build that computes"). Restarts the sandbox's servers: not for a host in use.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox import converge as sandbox  # noqa: E402
from tasks import config  # noqa: E402
from tasks.host import layout  # noqa: E402
from tasks.inference import llamacpp, smoke_model  # noqa: E402


def ssh(name: str, command: str) -> subprocess.CompletedProcess:
    ssh_config = ROOT / ".sandbox" / name / "ssh_config"
    return subprocess.run(["ssh", "-F", str(ssh_config), name, command], capture_output=True, text=True, timeout=600)


def timed(name: str, command: str) -> float:
    started = time.monotonic()
    result = ssh(name, command)
    if result.returncode != 0:
        raise SystemExit(f"on {name}: {command!r} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="kitty-sb")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args()

    cfg = config.load(config.read_group_data(ROOT / "group_data", sandbox.GROUP_DATA))
    root = layout.llamacpp_dir(cfg)
    build = ssh(args.name, f"readlink {root}/current").stdout.strip()
    gpu_layers, _ = llamacpp.smoke_gpu_request(cfg, cfg.llamacpp.backend)
    smoke = (
        f"sh {root}/smoke.sh {build} {root}/smoke/{smoke_model.NAME} /tmp/kitty-smoke-bench.log "
        f"{gpu_layers} {cfg.llamacpp.backend} portable {cfg.llamacpp.smoke_timeout}"
    )
    smoke_s = [timed(args.name, smoke) for _ in range(args.runs)]

    restart_s = {}
    for name, srv in cfg.enabled_servers().items():
        wait = (
            f"i=0; until [ \"$(curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:{srv.port}/health)\" = 200 ];"
            " do i=$((i + 1)); [ $i -lt 1200 ] || exit 1; sleep 0.1; done"
        )
        restart = f"sudo systemctl restart kitty-llama-{name}.service && {wait}"
        restart_s[name] = [timed(args.name, restart) for _ in range(args.runs)]

    result = {
        "host": args.name,
        "controller": f"{platform.machine()} {platform.processor() or platform.platform()}",
        "build": build,
        "smoke_s": [round(s, 2) for s in smoke_s],
        "smoke_s_median": round(statistics.median(smoke_s), 2),
        "restart_s_median": {name: round(statistics.median(times), 2) for name, times in restart_s.items()},
        "bad_build_by_restart_s": round(2 * sum(statistics.median(times) for times in restart_s.values()), 2),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
