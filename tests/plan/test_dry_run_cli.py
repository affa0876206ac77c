"""The README's `--dry` command, run as an operator runs it, against the simulated hosts."""

import json
import subprocess
import sys

from tests.plan.harness import ROOT


def dry_run_plan() -> list[dict]:
    result = subprocess.run(
        [sys.executable, "-m", "pyinfra", "tests/plan/simulated_hosts.py", "deploy.py", "--dry", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)["plan"]


def test_dry_run_plans_for_fresh_hosts_only():
    changed = {host for op in dry_run_plan() for host in op["hosts_with_change"]}
    assert changed == {"@fake/mac-fresh", "@fake/linux-fresh"}


def test_dry_run_names_the_prerequisite_operations():
    by_name = {op["name"]: op["hosts_with_change"] for op in dry_run_plan()}
    assert by_name["Prerequisites | Install Homebrew packages"] == ["@fake/mac-fresh"]
    assert by_name["Prerequisites | Install apt packages"] == ["@fake/linux-fresh"]
