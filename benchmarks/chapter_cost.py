#!/usr/bin/env python3
"""What the manual's other chapters cost on the sandbox host: wall time and SSH sessions.

    .venv/bin/python benchmarks/chapter_cost.py [--name kitty-sb] [--runs 3] [--root DIR] [--out FILE.json]

Against a running, converged sandbox host (sandbox/converge.py; KITTY_SANDBOX_PORT_OFFSET as
it needs), each read-only chapter `--runs` times as an operator runs it, then once with
`--debug` to count the SSH sessions opened (as benchmarks/converge_cost.py counts them):
  deploy.py            the no-op converge (the comparison: it had the fact shell already)
  diagnose.py          the whole diagnosis
  stop.py --dry        the stop planned (not done: it would stop the stack)
  bench.py --dry       the bench planned
`--root` runs another checkout's entry scripts against the same sandbox (to compare a
change: `git worktree add /tmp/before <commit>`). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import converge_cost as cost  # noqa: E402
from sandbox import converge as sandbox  # noqa: E402

CHAPTERS = {
    "converge (no-op)": ["deploy.py"],
    "diagnose": ["diagnose.py"],
    "stop --dry": ["stop.py", "--dry"],
    "bench --dry": ["bench.py", "--dry"],
}


def run(root: Path, name: str, script: list[str], debug: bool) -> dict:
    args = [
        sys.executable,
        "-m",
        "pyinfra",
        "inventory.py",
        script[0],
        "--group-data",
        str(root / "sandbox" / "group_data"),
    ]
    args += [*script[1:], "-y", *(["--debug"] if debug else [])]
    env = {**os.environ, **sandbox.sandbox_env(name), **sandbox.QUIET_HF}
    code, out, wall, _ = _run_in(root, args, env)
    result = {"exit": code, "wall_s": round(wall, 2)}
    if debug:
        result["ssh_sessions"] = out.count("Waiting for exit status") + out.count("Fact shell opened")
        result["fact_shell_commands"] = out.count("Fact shell exit status")
    if code != 0:
        result["tail"] = out.strip().splitlines()[-5:]
    return result


def _run_in(root: Path, args: list[str], env: dict):
    # converge_cost._run runs pyinfra in its ROOT: here, the checkout asked for.
    saved = cost.ROOT
    cost.ROOT = root
    try:
        return cost._run(args, env)
    finally:
        cost.ROOT = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="kitty-sb")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--out", type=Path)
    options = parser.parse_args()
    report = {"root": str(options.root), "chapters": {}}
    for chapter, script in CHAPTERS.items():
        # One untimed run first: the other checkout's converge may change what this one's left
        # (a setting one of them has and the other has not), and every timed run must be a no-op.
        run(options.root, options.name, script, debug=False)
        timed = [run(options.root, options.name, script, debug=False) for _ in range(options.runs)]
        counted = run(options.root, options.name, script, debug=True)
        report["chapters"][chapter] = {
            "wall_s_median": statistics.median(r["wall_s"] for r in timed),
            "wall_s": [r["wall_s"] for r in timed],
            "exits": [r["exit"] for r in timed],
            **{k: v for k, v in counted.items() if k != "wall_s"},
        }
    text = json.dumps(report, indent=2)
    print(text)
    if options.out:
        options.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
