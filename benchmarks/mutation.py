"""Mutation score of the decision code: how many small bugs planted by mutmut the tests catch.

    .venv/bin/python benchmarks/mutation.py                    # every area below
    .venv/bin/python benchmarks/mutation.py --area placement   # one (repeatable)
    .venv/bin/python benchmarks/mutation.py --again            # after new tests: only what survived

What it mutates (AREAS): the supervisor's decision table and the record it is
decided against (tasks/supervise/decide.py), model file verification
(models.is_verified / expected_sha256), placement (tasks/config/placement.py),
diagnose's redaction, and the fact shell's framing (tasks/engine/fact_shell.py).
mutmut (requirements.txt) changes one thing at a time (an operator, a
constant, a condition, an argument) and runs the unit and plan tests that
reach that function; a mutant no test fails on "survived".

Each area runs in its own scratch copy of the tree (.sandbox/mutation/<area>:
the tracked files and new ones, as they are now), never in the checkout
itself, against tests/unit and the plan tests about it (AREAS). mutmut 3 only
mutates undecorated functions and methods: pyinfra operations and deploys
(decorated) are out of its reach. Its trampolines hide a function's parameters
from `inspect.getcallargs` and `getfullargspec`, which pyinfra uses to call a
fact's `command` and a FunctionCommand; the scratch copy's sitecustomize.py
makes them follow `__wrapped__` (the copy only).
The plan tests that run pyinfra's CLI in a subprocess are left out (they
would not see that patch).

Prints one JSON object (per area and per function: mutants, killed, survived,
no tests, timeouts, score) and writes it, with every survivor's diff, to
reports/mutation.json. Slow (tens of minutes on 2 cores): not part of CI.
Survivors judged harmless, and why, are listed in the README.
"""

from __future__ import annotations

import argparse
import fnmatch
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

# Area -> (file, the functions of it that are the area (None: all of the file's), the plan tests about
# it). Function names as mutmut mangles them: `x_name` for a function, `xǁClassǁname` for a method.
# Each area runs against tests/unit and its plan tests: the decision table against every plan (every
# converge decides), the others against theirs (every plan places its servers, but only
# test_placement.py says where they should be).
AREAS = {
    "decide": ("tasks/supervise/decide.py", None, ["tests/plan"]),
    "models verification": (
        "tasks/inference/models.py",
        ["x_is_verified", "x_expected_sha256"],
        ["tests/plan/test_models.py", "tests/plan/test_model_stamp_pins.py"],
    ),
    "placement": ("tasks/config/placement.py", None, ["tests/plan/test_placement.py"]),
    "diagnose redaction": (
        "tasks/runbook/diagnose.py",
        ["x_redact", "x_known_secrets", "x__redact_tree"],
        ["tests/plan/test_bench_diagnose.py"],
    ),
    "fact shell framing": ("tasks/engine/fact_shell.py", None, []),
}
LEFT_OUT = [
    "tests/plan/test_dry_run_cli.py",
    "tests/plan/test_placement.py::test_the_two_macs_dry_run_through_pyinfras_cli_plans_each_mac_its_servers",
]

SITECUSTOMIZE = '''"""benchmarks/mutation.py: inspect through mutmut's trampolines (__wrapped__), as pyinfra needs."""
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
_getfullargspec = inspect.getfullargspec


def getfullargspec(func):
    """pyinfra reads a FunctionCommand's arguments with it."""
    return _getfullargspec(inspect.unwrap(func) if hasattr(func, "__wrapped__") else func)


inspect.getfullargspec = getfullargspec
'''


def slug(area: str) -> str:
    return area.replace(" ", "-")


def scratch_copy(scratch: Path, fresh: bool = True) -> None:
    """The tree into `scratch`; not `fresh`: over the one there, keeping mutmut's mutants and results."""
    if fresh and scratch.exists():
        shutil.rmtree(scratch)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in listed:
        source = ROOT / name
        if not name or name == ".venv" or source.is_symlink() or not source.is_file():
            continue
        target = scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def also_copy() -> list[str]:
    """Every top-level file and folder of the tree besides tasks/ and tests/ (mutmut copies those
    itself): the tests read many of them (templates, sandbox, .github, .importlinter, the README)."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return sorted({name.split("/", 1)[0] for name in listed.split("\0") if name} - {"tasks", "tests"})


def configure(scratch: Path, area: str) -> None:
    path, _, plan_tests = AREAS[area]
    lines = ["[mutmut]", "source_paths = tasks", "only_mutate =", f"    {path}"]
    lines += ["also_copy ="] + [f"    {name}" for name in also_copy()]
    lines += ["pytest_add_cli_args ="] + [f"    --deselect={name}" for name in LEFT_OUT]
    lines += ["    -p", "    no:cacheprovider"]
    lines += ["pytest_add_cli_args_test_selection =", "    tests/unit"] + [f"    {name}" for name in plan_tests]
    (scratch / "setup.cfg").write_text("\n".join(lines) + "\n")
    site = scratch / "mutation-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)


def module_of(area: str) -> str:
    return AREAS[area][0].removesuffix(".py").replace("/", ".")


def globs(area: str) -> list[str]:
    functions = AREAS[area][1]
    return [f"{module_of(area)}.{name}__mutmut_*" for name in functions] if functions else [f"{module_of(area)}.*"]


def mutmut(scratch: Path, *args: str, log=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(scratch / "mutation-site")}
    env.pop("PYTEST_ADDOPTS", None)
    return subprocess.run(
        [str(MUTMUT), *args], cwd=scratch, env=env, text=True, check=False,
        stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def summary(counts: dict[str, int]) -> dict:
    total = sum(counts.values())
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    return {"mutants": total, **counts, "score": round(100 * killed / total, 1) if total else None}


def not_killed(scratch: Path, area: str) -> list[str]:
    """The area's mutants no test killed in the last run there (to run again after new tests)."""
    found = []
    for line in mutmut(scratch, "results").stdout.splitlines():
        match = re.match(r"\s+(\S+__mutmut_\d+): (.+)$", line)
        if match and any(fnmatch.fnmatch(match.group(1), pattern) for pattern in globs(area)):
            found.append(match.group(1))
    return found


def area_report(scratch: Path, area: str) -> tuple[dict, dict[str, dict]]:
    """The area's counts (and per function), and its survivors with their diffs."""
    module, functions = module_of(area), AREAS[area][1]
    counts: dict[str, int] = {}
    per_function: dict[str, dict[str, int]] = {}
    survivors = {}
    for line in mutmut(scratch, "results", "--all", "true").stdout.splitlines():
        match = re.match(r"\s+(\S+__mutmut_\d+): (.+)$", line)
        if not match or not match.group(1).startswith(module + "."):
            continue
        name, status = match.group(1), match.group(2).strip()
        function = name[len(module) + 1 :].rsplit("__mutmut_", 1)[0]
        if functions is not None and function not in functions:
            continue
        counts[status] = counts.get(status, 0) + 1
        per_function.setdefault(function, {})[status] = per_function.get(function, {}).get(status, 0) + 1
        if status not in ("killed", "timeout"):
            survivors[name] = {"status": status, "diff": mutmut(scratch, "show", name).stdout}
    tests = ["tests/unit", *AREAS[area][2]]
    functions_summary = {function: summary(c) for function, c in sorted(per_function.items())}
    return {"file": AREAS[area][0], "tests": tests, **summary(counts), "functions": functions_summary}, survivors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--area", action="append", choices=sorted(AREAS), help="only this area (repeatable)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--report", type=Path, default=ROOT / "reports" / "mutation.json")
    parser.add_argument(
        "--again",
        action="store_true",
        help="in the last run's scratch copy, run only what survived it (after new tests)",
    )
    options = parser.parse_args()
    result: dict = {"tool": None, "seconds": {}, "total": None, "areas": {}, "survivors": {}}
    totals: dict[str, int] = {}
    for area in options.area or list(AREAS):
        started = time.monotonic()
        scratch = SCRATCH / slug(area)
        again = options.again and (scratch / "mutants").is_dir()
        names = not_killed(scratch, area) if again else globs(area)
        scratch_copy(scratch, fresh=not again)
        configure(scratch, area)
        log_path = scratch / "mutmut.log"
        if names:
            with log_path.open("w") as log:
                run = mutmut(scratch, "run", "--max-children", str(options.max_children), *names, log=log)
            if run.returncode != 0:
                print(f"{area}: mutmut run failed (exit {run.returncode}): see {log_path}", file=sys.stderr)
                return run.returncode
        result["tool"] = "mutmut " + mutmut(scratch, "--version").stdout.strip().rsplit(" ", 1)[-1]
        result["areas"][area], survivors = area_report(scratch, area)
        result["survivors"].update(survivors)
        result["seconds"][area] = round(time.monotonic() - started)
        for key in ("killed", "survived", "no tests", "timeout", "suspicious", "skipped", "segfault"):
            totals[key] = totals.get(key, 0) + result["areas"][area].get(key, 0)
    result["total"] = summary({key: value for key, value in totals.items() if value})
    options.report.parent.mkdir(parents=True, exist_ok=True)
    options.report.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({key: value for key, value in result.items() if key != "survivors"}, indent=2, ensure_ascii=False))
    print(f"{len(result['survivors'])} survivor(s), with their diffs, in {options.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
