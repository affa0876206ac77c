"""CI's guard against a suite that shrank without failing: skipped, deselected or missing tests.

`.ci/run` runs pytest with this module as a plugin (`-p tests.skip_guard`): it
writes into the JUnit report how the tests were selected. `.ci/no_skipped.py
REPORT` then fails, saying why, when:

- a test was skipped, wherever it is (a module-level skip, whose JUnit
  classname is empty, included), unless `EXPECTED_SKIPS` names it with (a part
  of) its reason;
- a test was deselected (`-k`, `-m`, `--deselect`, from the command line,
  PYTEST_ADDOPTS, pytest.ini or a plugin), PYTEST_ADDOPTS was set at all, or
  pytest was given paths or selection options instead of pytest.ini's testpaths;
- fewer e2e or simulated-Mac tests ran than `MINIMUM` says;
- the report lacks the plugin's record (the run did not go through `.ci/run`).

The e2e tests hold the host suite they run over SSH (tests/host) to the same
rule with `unexpected_skips`: a skipped host check fails them unless named.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

import pytest

# Tests that must run in CI: a lower count means some stopped being collected. Raise these
# when tests are added; lower them only with the tests' removal, in the same change.
MINIMUM = {"tests.e2e": 76, "tests.macsim": 38}
# Test id -> a part of the reason it is allowed to skip with. None today: CI installs what every test needs.
EXPECTED_SKIPS: dict[str, str] = {}
# The same for the host suite (tests/host) the e2e tests run against the sandbox: none, every check
# applies there (every stack service publishes a port, metrics and the query are on).
EXPECTED_HOST_SKIPS: dict[str, str] = {}
PROPERTY = "kitty-ci-selection"


@dataclass(frozen=True)
class Case:
    id: str
    outcome: str  # passed, failed, error, skipped
    message: str = ""


def cases(report: str) -> list[Case]:
    """Every testcase of a JUnit report; a module-level skip has an empty classname and the module as name."""
    found = []
    for case in ElementTree.parse(report).iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        test_id = f"{classname}.{name}" if classname else name
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            element = case.find(kind)
            if element is not None:
                outcome = "failed" if kind == "failure" else kind
                message = element.get("message") or (element.text or "")
                break
        found.append(Case(test_id, outcome, message))
    return found


def unexpected_skips(found: list[Case], expected: dict[str, str]) -> list[str]:
    """Skipped cases that `expected` does not name with their reason: `id: reason`."""
    problems = []
    for case in found:
        if case.outcome != "skipped":
            continue
        allowed = next((why for test_id, why in expected.items() if case.id == test_id), None)
        if allowed is None or allowed not in case.message:
            problems.append(f"skipped: {case.id}: {case.message}")
    return problems


def selection(report: str) -> dict | None:
    for prop in ElementTree.parse(report).iter("property"):
        if prop.get("name") == PROPERTY:
            return json.loads(prop.get("value") or "{}")
    return None


def selection_problems(recorded: dict | None) -> list[str]:
    if recorded is None:
        return [f"the report has no {PROPERTY} property: run pytest as .ci/run does (-p tests.skip_guard)"]
    problems = []
    if recorded.get("deselected"):
        problems.append(f"deselected: {recorded['deselected']} test(s) (-k, -m, --deselect or a plugin)")
    if recorded.get("PYTEST_ADDOPTS"):
        problems.append(f"PYTEST_ADDOPTS was set: {recorded['PYTEST_ADDOPTS']!r}")
    if recorded.get("args_source") != "TESTPATHS":
        problems.append(f"pytest was given paths instead of pytest.ini's testpaths: {recorded.get('args')}")
    for option in ("keyword", "markexpr", "deselect", "ignore", "ignore_glob", "lf", "stepwise"):
        if recorded.get(option):
            problems.append(f"a selection option is set: {option}={recorded[option]!r}")
    return problems


def minimum_problems(found: list[Case], minimum: dict[str, int]) -> list[str]:
    problems = []
    for prefix, least in minimum.items():
        ran = [case for case in found if case.id.startswith(prefix + ".") and case.outcome != "skipped"]
        if len(ran) < least:
            problems.append(f"only {len(ran)} test(s) of {prefix} ran, at least {least} must (skip_guard.MINIMUM)")
    return problems


def problems(report: str, minimum: dict[str, int] = MINIMUM, expected: dict[str, str] = EXPECTED_SKIPS) -> list[str]:
    found = cases(report)
    return [
        *selection_problems(selection(report)),
        *unexpected_skips(found, expected),
        *minimum_problems(found, minimum),
    ]


# --- The plugin: how the tests were selected, into the report ---------------------------------

_deselected = pytest.StashKey[int]()


def pytest_configure(config):
    config.stash[_deselected] = 0


def pytest_deselected(items):
    if items:
        config = items[0].config
        config.stash[_deselected] = config.stash.get(_deselected, 0) + len(items)


def pytest_collection_finish(session):
    from _pytest.junitxml import xml_key

    xml = session.config.stash.get(xml_key, None)
    if xml is None:
        return
    config, option = session.config, session.config.option
    recorded = {
        "deselected": config.stash.get(_deselected, 0),
        "PYTEST_ADDOPTS": os.environ.get("PYTEST_ADDOPTS", ""),
        "args_source": config.args_source.name,
        "args": list(config.invocation_params.args),
        **{
            name: getattr(option, name, None)
            for name in ("keyword", "markexpr", "deselect", "ignore", "ignore_glob", "lf", "stepwise")
        },
    }
    xml.add_global_property(PROPERTY, json.dumps(recorded))
