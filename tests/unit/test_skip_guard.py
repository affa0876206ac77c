"""CI's skip guard (tests/skip_guard.py, .ci/no_skipped.py), proven on reports of real pytest runs.

Each way a suite can shrink without failing is done on purpose in a small
project (its own tests/e2e, tests/macsim, tests/unit) run by pytest with the
guard's plugin, as `.ci/run` runs the real one; the guard must then fail,
naming what happened. A clean run of the same project passes it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import skip_guard

ROOT = Path(__file__).resolve().parents[2]
GUARD = ROOT / ".ci" / "no_skipped.py"
MINIMUM = {"tests.e2e": 2, "tests.macsim": 1}

FILES = {
    "pytest.ini": "[pytest]\ntestpaths = tests\naddopts = -p no:cacheprovider\nmarkers =\n    slow: slow\n",
    "tests/__init__.py": "",
    "tests/e2e/__init__.py": "",
    "tests/e2e/test_converge.py": "import pytest\n\ndef test_first():\n    pass\n\n"
    "@pytest.mark.slow\ndef test_second():\n    pass\n",
    "tests/macsim/__init__.py": "",
    "tests/macsim/test_mac.py": "def test_mac():\n    pass\n",
    "tests/unit/__init__.py": "",
    "tests/unit/test_fast.py": "def test_fast():\n    pass\n",
}


@pytest.fixture
def project(tmp_path) -> Path:
    for name, text in FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    # The plugin as the project's own module, as `-p tests.skip_guard` finds it in the real one.
    shutil.copy(ROOT / "tests" / "skip_guard.py", tmp_path / "tests" / "skip_guard.py")
    return tmp_path


def ci_run(project: Path, *args: str, plugin: bool = True, addopts: str | None = None) -> str:
    """pytest in `project` as .ci/run runs it (plus `args`); the path of its JUnit report."""
    report = project / "report.xml"
    report.unlink(missing_ok=True)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTEST_ADDOPTS", "CI")}
    if addopts is not None:
        env["PYTEST_ADDOPTS"] = addopts
    command = [sys.executable, "-m", "pytest", "-q", f"--junitxml={report}", *(["-p", "tests.skip_guard"] * plugin)]
    done = subprocess.run([*command, *args], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert report.exists(), done.stdout + done.stderr
    return str(report)


def problems(report: str, expected: dict[str, str] | None = None) -> list[str]:
    return skip_guard.problems(report, minimum=MINIMUM, expected=expected or {})


def write(project: Path, name: str, text: str) -> None:
    (project / name).write_text(text)


def test_a_clean_run_passes(project):
    assert problems(ci_run(project)) == []


def test_a_module_level_skip_in_e2e_fails_naming_the_module(project):
    write(project, "tests/e2e/test_docker.py", "import pytest\npytest.skip('no Docker', allow_module_level=True)\n")
    found = problems(ci_run(project))
    assert any(line.startswith("skipped: tests.e2e.test_docker:") for line in found), found


def test_a_skip_anywhere_fails_a_unit_test_included(project):
    write(project, "tests/unit/test_tool.py", "import pytest\n\ndef test_dash():\n    pytest.skip('dash missing')\n")
    assert problems(ci_run(project)) == ["skipped: tests.unit.test_tool.test_dash: dash missing"]


def test_a_skip_marker_in_the_simulated_mac_suite_fails(project):
    write(project, "tests/macsim/test_mac.py", "import pytest\n\n@pytest.mark.skip(reason='later')\ndef test_mac():\n"
          "    pass\n")  # fmt: skip
    found = problems(ci_run(project))
    assert "skipped: tests.macsim.test_mac.test_mac: later" in found
    assert "only 0 test(s) of tests.macsim ran, at least 1 must (skip_guard.MINIMUM)" in found


def test_deselection_with_k_fails(project):
    found = problems(ci_run(project, "-k", "not test_second"))
    assert "deselected: 1 test(s) (-k, -m, --deselect or a plugin)" in found
    assert "a selection option is set: keyword='not test_second'" in found


def test_deselection_with_m_fails(project):
    found = problems(ci_run(project, "-m", "not slow"))
    assert "deselected: 1 test(s) (-k, -m, --deselect or a plugin)" in found


def test_deselection_through_pytest_addopts_fails(project):
    found = problems(ci_run(project, addopts="-k 'not test_second'"))
    assert "deselected: 1 test(s) (-k, -m, --deselect or a plugin)" in found
    assert "PYTEST_ADDOPTS was set: \"-k 'not test_second'\"" in found


def test_pytest_addopts_fails_even_when_it_selects_nothing_away(project):
    assert problems(ci_run(project, addopts="-v")) == ["PYTEST_ADDOPTS was set: '-v'"]


def test_deselection_written_into_pytest_ini_fails(project):
    ini = project / "pytest.ini"
    ini.write_text(
        ini.read_text().replace("addopts = ", "addopts = --deselect tests/e2e/test_converge.py::test_second ")
    )
    found = problems(ci_run(project))
    assert "deselected: 1 test(s) (-k, -m, --deselect or a plugin)" in found


def test_paths_instead_of_the_testpaths_fail_and_the_minimum_says_what_is_missing(project):
    found = problems(ci_run(project, "tests/unit"))
    assert any(line.startswith("pytest was given paths instead of pytest.ini's testpaths") for line in found)
    assert "only 0 test(s) of tests.e2e ran, at least 2 must (skip_guard.MINIMUM)" in found


def test_an_ignored_folder_fails(project):
    found = problems(ci_run(project, "--ignore=tests/macsim"))
    assert "a selection option is set: ignore=['tests/macsim']" in found
    assert "only 0 test(s) of tests.macsim ran, at least 1 must (skip_guard.MINIMUM)" in found


def test_a_run_without_the_plugin_fails(project):
    found = problems(ci_run(project, plugin=False))
    assert found == [
        f"the report has no {skip_guard.PROPERTY} property: run pytest as .ci/run does (-p tests.skip_guard)"
    ]


def test_a_skip_named_as_expected_with_its_reason_passes_and_only_that_one(project):
    write(project, "tests/unit/test_tool.py", "import pytest\n\ndef test_gpu():\n    pytest.skip('no GPU here')\n")
    report = ci_run(project)
    assert problems(report, {"tests.unit.test_tool.test_gpu": "no GPU"}) == []
    # Named, but skipped for another reason than the one expected.
    assert problems(report, {"tests.unit.test_tool.test_gpu": "no Metal"}) != []


# --- The host suite inside e2e ------------------------------------------------------------


def test_a_skipped_host_check_fails_unless_named(project):
    """tests/e2e/test_verify.py and test_converge_sandbox.py judge the host suite's report with this."""
    write(
        project, "tests/unit/test_host.py", "import pytest\n\ndef test_port():\n    pytest.skip('publishes no port')\n"
    )
    found = skip_guard.cases(ci_run(project, "tests/unit"))
    assert skip_guard.unexpected_skips(found, {}) == ["skipped: tests.unit.test_host.test_port: publishes no port"]
    assert skip_guard.unexpected_skips(found, {"tests.unit.test_host.test_port": "publishes no port"}) == []


# --- .ci/no_skipped.py, as .ci/run calls it -------------------------------------------------


def test_the_ci_command_fails_on_a_skip_and_passes_a_full_report(project, tmp_path):
    write(project, "tests/e2e/test_docker.py", "import pytest\npytest.skip('no Docker', allow_module_level=True)\n")
    done = subprocess.run([sys.executable, str(GUARD), ci_run(project)], capture_output=True, text=True)
    assert done.returncode == 1 and "[ci] skipped: tests.e2e.test_docker: " in done.stderr
    # A report with every test the minimum asks for, as the real suite's.
    cases = "".join(
        f'<testcase classname="{module}.test_x" name="test_{i}"/>'
        for module, least in skip_guard.MINIMUM.items()
        for i in range(least)
    )
    prop = '{"deselected": 0, "PYTEST_ADDOPTS": "", "args_source": "TESTPATHS"}'
    full = tmp_path / "full.xml"
    full.write_text(
        f"<testsuites><testsuite><properties><property name='{skip_guard.PROPERTY}' value='{prop}'/>"
        f"</properties>{cases}</testsuite></testsuites>"
    )
    done = subprocess.run([sys.executable, str(GUARD), str(full)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
