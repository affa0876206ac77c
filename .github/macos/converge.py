"""One step of .github/workflows/macos.yml: run a kitty-ops chapter on the runner itself and check what it did.

    python .github/macos/converge.py deploy.py [--no-change] [--restarted NAME...] [--kept NAME...]
    python .github/macos/converge.py stop.py --stopped NAME...

Runs `pyinfra -y --json inventory.py SCRIPT --group-data .github/macos/group_data` (@local: the
runner converges itself), prints what pyinfra printed, and fails when:
- the run failed;
- --no-change: any operation changed something;
- --restarted / --kept: a model server's process (its pid under launchd, `launchctl print
  system/<label>`) did not change / changed across the run;
- --stopped: a model server's job is still loaded in launchd afterwards.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GROUP_DATA = ROOT / ".github" / "macos" / "group_data"
PREFIX = "com.kitty.llama-server."


def pid(name: str) -> int | None:
    p = subprocess.run(["sudo", "-n", "launchctl", "print", f"system/{PREFIX}{name}"], capture_output=True, text=True)
    found = re.search(r"^\s*pid = (\d+)", p.stdout, re.M)
    return int(found.group(1)) if p.returncode == 0 and found else None


def loaded(name: str) -> bool:
    p = subprocess.run(["sudo", "-n", "launchctl", "print", f"system/{PREFIX}{name}"], capture_output=True)
    return p.returncode == 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("script")
    ap.add_argument("--no-change", action="store_true")
    ap.add_argument("--restarted", nargs="*", default=[])
    ap.add_argument("--kept", nargs="*", default=[])
    ap.add_argument("--stopped", nargs="*", default=[])
    a = ap.parse_args(argv)
    before = {name: pid(name) for name in [*a.restarted, *a.kept]}
    command = [sys.executable, "-m", "pyinfra", "-y", "--json", "inventory.py", a.script]
    command += ["--group-data", str(GROUP_DATA)]
    p = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    sys.stderr.write(p.stderr)
    problems = []
    if p.returncode != 0:
        problems.append(f"{a.script} exited {p.returncode}")
    try:
        results = json.loads(p.stdout)["results"]
    except (ValueError, KeyError):
        results = {"operations": [], "totals": {}}
        problems.append(f"{a.script} printed no JSON results:\n{p.stdout[-2000:]}")
    changed = [op["name"] for op in results.get("operations", []) if op.get("success")]
    print(f"[macos] {a.script}: {len(changed)} operation(s) changed: {changed}")
    if a.no_change and changed:
        problems.append(f"a second run changed: {changed}")
    for name in a.restarted:
        now = pid(name)
        if now is None or now == before[name]:
            problems.append(f"server {name} was not restarted (pid {before[name]} -> {now})")
    for name in a.kept:
        now = pid(name)
        if now is None or now != before[name]:
            problems.append(f"server {name} was restarted or is not running (pid {before[name]} -> {now})")
    for name in a.stopped:
        if loaded(name):
            problems.append(f"server {name} is still loaded in launchd after {a.script}")
    for problem in problems:
        print(f"[macos] FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
