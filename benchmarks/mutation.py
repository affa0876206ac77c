"""Mutation score of the decision code: how many small bugs planted by mutmut the tests catch.

    .venv/bin/python benchmarks/mutation.py                    # every area below
    .venv/bin/python benchmarks/mutation.py --area placement   # one (repeatable)

What it mutates (AREAS): the supervisor's decision table and the record it is
decided against (tasks/supervise/decide.py), model file verification
(models.is_verified / expected_sha256), placement (tasks/placement.py),
diagnose's redaction, and the fact shell's framing (tasks/fact_shell.py).
mutmut (requirements.txt) changes one thing at a time (an operator, a
constant, a condition, an argument) and runs the unit and plan tests that
reach that function; a mutant no test fails on "survived".

It works in a scratch copy of the tree (.sandbox/mutation: the tracked files
and new ones, as they are now), never in the checkout itself. mutmut 3 only
mutates undecorated functions and methods: pyinfra operations and deploys
(decorated) are out of its reach. Its trampolines hide a function's parameters
from `inspect.getcallargs`, which pyinfra uses to call a fact's `command`; the
scratch copy's sitecustomize.py makes that follow `__wrapped__` (the copy only).
The plan tests that run pyinfra's CLI in a subprocess are left out (they
would not see that patch).

Prints one JSON object (per area and per function: mutants, killed, survived,
no tests, timeouts, score) and writes it, with every survivor's diff, to
reports/mutation.json. Slow (tens of minutes on 2 cores): not part of CI.
Survivors judged harmless, and why, are listed in the README.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".sandbox" / "mutation"
MUTMUT = Path(sys.executable).parent / "mutmut"

# Area -> (file, the functions of it that are the area; None: all of the file's). Function names
# as mutmut mangles them: `x_name` for a function, `xǁClassǁname` for a method.
AREAS = {
    "decide": ("tasks/supervise/decide.py", None),
    "models verification": ("tasks/models.py", ["x_is_verified", "x_expected_sha256"]),
    "placement": ("tasks/placement.py", None),
    "diagnose redaction": ("tasks/diagnose.py", ["x_redact", "x_known_secrets", "x__redact_tree"]),
    "fact shell framing": ("tasks/fact_shell.py", None),
}
# Top-level files and folders the tests read besides tasks/ and tests/ (mutmut copies those itself).
ALSO_COPY = [
    ".ci",
    "templates",
    "group_data",
    "inventories",
    "sandbox",
    "benchmarks",
    "conftest.py",
    "pytest.ini",
    "deploy.py",
    "stop.py",
    "backup.py",
    "restore.py",
    "bench.py",
    "diagnose.py",
    "inventory.py",
    "lock_models.py",
]
LEFT_OUT = [
    "tests/plan/test_dry_run_cli.py",
    "tests/plan/test_placement.py::test_the_two_macs_dry_run_through_pyinfras_cli_plans_each_mac_its_servers",
]

SITECUSTOMIZE = '''"""benchmarks/mutation.py: let inspect.getcallargs see through mutmut's trampolines (__wrapped__)."""
import inspect

_getcallargs = inspect.getcallargs


def getcallargs(func, /, *args, **kwargs):
    if not hasattr(func, "__wrapped__"):
        return _getcallargs(func, *args, **kwargs)
    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    found = dict(bound.arguments)
    if inspect.ismethod(func):
        found = {"self": func.__self__, **found}
    return found


inspect.getcallargs = getcallargs
'''


def scratch_copy() -> None:
    if SCRATCH.exists():
        shutil.rmtree(SCRATCH)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in listed:
        source = ROOT / name
        if not name or name == ".venv" or source.is_symlink() or not source.is_file():
            continue
        target = SCRATCH / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def configure(areas: list[str]) -> None:
    files = sorted({AREAS[area][0] for area in areas})
    lines = ["[mutmut]", "source_paths = tasks", "only_mutate ="]
    lines += [f"    {name}" for name in files]
    lines += ["also_copy ="] + [f"    {name}" for name in ALSO_COPY]
    lines += ["pytest_add_cli_args ="] + [f"    --deselect={name}" for name in LEFT_OUT]
    lines += ["    -p", "    no:cacheprovider"]
    lines += ["pytest_add_cli_args_test_selection =", "    tests/unit", "    tests/plan"]
    (SCRATCH / "setup.cfg").write_text("\n".join(lines) + "\n")
    site = SCRATCH / "mutation-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)


def globs(areas: list[str]) -> list[str]:
    found = []
    for area in areas:
        path, functions = AREAS[area]
        module = path.removesuffix(".py").replace("/", ".")
        found += [f"{module}.{name}__mutmut_*" for name in functions] if functions else [f"{module}.*"]
    return found


def mutmut(*args: str, log=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SCRATCH / "mutation-site")}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [str(MUTMUT), *args], cwd=SCRATCH, env=env, text=True, check=False,
        stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def results() -> dict[str, str]:
    """{mutant name: killed | survived | no tests | timeout | ...} from `mutmut results --all true`."""
    found = {}
    for line in mutmut("results", "--all", "true").stdout.splitlines():
        match = re.match(r"\s+(\S+__mutmut_\d+): (.+)$", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def area_of(name: str, areas: list[str]) -> tuple[str, str] | None:
    """(area, function) of a mutant name such as `tasks.models.x_is_verified__mutmut_3`."""
    for area in areas:
        path, functions = AREAS[area]
        module = path.removesuffix(".py").replace("/", ".")
        if not name.startswith(module + "."):
            continue
        function = name[len(module) + 1 :].rsplit("__mutmut_", 1)[0]
        if functions is None or function in functions:
            return area, function
    return None


def summary(counts: dict[str, int]) -> dict:
    total = sum(counts.values())
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    return {"mutants": total, **counts, "score": round(100 * killed / total, 1) if total else None}


def report(areas: list[str], seconds: float) -> dict:
    statuses = results()
    per_area: dict[str, dict] = {area: {"functions": {}, "counts": {}} for area in areas}
    survivors = {}
    for name, status in sorted(statuses.items()):
        found = area_of(name, areas)
        if found is None:
            continue
        area, function = found
        per_area[area]["counts"][status] = per_area[area]["counts"].get(status, 0) + 1
        counts = per_area[area]["functions"].setdefault(function, {})
        counts[status] = counts.get(status, 0) + 1
        if status not in ("killed", "timeout"):
            survivors[name] = {"status": status, "diff": mutmut("show", name).stdout}
    everything: dict[str, int] = {}
    for data in per_area.values():
        for status, count in data["counts"].items():
            everything[status] = everything.get(status, 0) + count
    return {
        "tool": "mutmut " + mutmut("--version").stdout.strip().rsplit(" ", 1)[-1],
        "seconds": round(seconds),
        "total": summary(everything),
        "areas": {
            area: {
                **summary(data["counts"]),
                "functions": {function: summary(c) for function, c in sorted(data["functions"].items())},
            }
            for area, data in per_area.items()
        },
        "survivors": survivors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--area", action="append", choices=sorted(AREAS), help="only this area (repeatable)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--report", type=Path, default=ROOT / "reports" / "mutation.json")
    options = parser.parse_args()
    areas = options.area or list(AREAS)
    started = time.monotonic()
    scratch_copy()
    configure(areas)
    log_path = SCRATCH / "mutmut.log"
    with log_path.open("w") as log:
        run = mutmut("run", "--max-children", str(options.max_children), *globs(areas), log=log)
    if run.returncode != 0:
        print(f"mutmut run failed (exit {run.returncode}): see {log_path}", file=sys.stderr)
        return run.returncode
    result = report(areas, time.monotonic() - started)
    options.report.parent.mkdir(parents=True, exist_ok=True)
    options.report.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({key: value for key, value in result.items() if key != "survivors"}, indent=2, ensure_ascii=False))
    print(f"{len(result['survivors'])} survivor(s), with their diffs, in {options.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
