"""What stop.py and the launchd backend run on the host, executed here under dash and busybox sh.

The plan tests see these only as command strings. Here they run:
- `KittyProcesses`: `ps | awk` over this machine's real processes, with a
  "llama-server" of ours, one that is not ours, a venv script of ours and a
  process that only names our path in its arguments;
- the launchd bootout wait (`launchd._bootout`, `stop._bootout_timed`)
  against a fake `launchctl` whose job, as launchd's does, is still there
  for a while after `bootout` returned (exit 36).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.runbook.shutdown import KittyProcesses
from tasks.supervise import launchd
from tasks.supervise import stop as supervise_stop
from tests.tools import busybox_path, executable, require

SHELLS = ["dash", "busybox"]
LABEL = "com.kitty.llama.q4"
SERVICE = f"system/{LABEL}"

# launchctl as launchd answers it: bootout returns at once (36: "Operation now in
# progress") and the job stays loaded for `$FAKE/left` more `print`s.
FAKE_LAUNCHCTL = """#!/bin/sh
echo "$*" >> "$FAKE/calls"
case $1 in
bootout) echo "Boot-out failed: 36: Operation now in progress" >&2; exit 36 ;;
print)
    left=$(cat "$FAKE/left")
    [ "$left" -gt 0 ] || exit 113
    echo $((left - 1)) > "$FAKE/left"
    echo "$2 = {"; echo "	state = running"
    [ ! -f "$FAKE/timeout" ] || echo "	exit timeout = $(cat "$FAKE/timeout")"
    echo "}"
    exit 0 ;;
esac
exit 64
"""


def run(shell: str, command: str, path: str, env: dict | None = None) -> subprocess.CompletedProcess:
    argv = [shutil.which("busybox"), "sh", "-c"] if shell == "busybox" else [shutil.which(shell), "-c"]
    return subprocess.run(
        [*argv, command], env={"PATH": path, "LC_ALL": "C", **(env or {})}, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(params=SHELLS)
def shell(request, tmp_path) -> tuple[str, str]:
    """(shell, PATH): busybox with busybox's applets alone, dash with the system's tools."""
    require(request.param)
    if request.param == "busybox":
        return "busybox", busybox_path(tmp_path / "busybox-only")
    return "dash", "/usr/bin:/bin"


# --- KittyProcesses -------------------------------------------------------------------------


@pytest.fixture
def processes(tmp_path):
    """Real processes: {"ours": [pids], "foreign": [pids]}; killed at the end."""
    opt = tmp_path / "opt" / "kitty" / "llama.cpp" / "builds" / "b1" / "bin"
    venv = tmp_path / "KITT" / "images" / ".venv" / "bin"
    elsewhere = tmp_path / "elsewhere"
    for folder in (opt, venv, elsewhere):
        folder.mkdir(parents=True)
    sleep = shutil.which("sleep")
    shutil.copy(sleep, opt / "llama-server")
    shutil.copy(sleep, elsewhere / "llama-server")
    idle = "import time\ntime.sleep(300)\n"
    (venv / "rq").write_text(idle)
    (elsewhere / "watch.py").write_text(idle)
    # Our folder's path inside a longer path: a word that holds it, but does not start with it.
    inside = Path(f"{elsewhere}{opt}")
    inside.mkdir(parents=True)
    (inside / "tool.py").write_text(idle)
    started = {
        "ours": [[str(opt / "llama-server"), "300"], [sys.executable, str(venv / "rq")]],
        "foreign": [
            [str(elsewhere / "llama-server"), "300"],
            # Our path, but not as the program or the script it runs.
            [sys.executable, str(elsewhere / "watch.py"), str(opt / "llama-server")],
            [sys.executable, str(inside / "tool.py")],
        ],
    }
    running = {kind: [subprocess.Popen(argv) for argv in argvs] for kind, argvs in started.items()}
    time.sleep(0.3)
    assert all(proc.poll() is None for procs in running.values() for proc in procs), "a test process exited"
    paths = [f"{tmp_path}/opt/kitty/llama.cpp/", f"{tmp_path}/KITT/images/.venv/"]
    yield paths, {kind: {p.pid for p in procs} for kind, procs in running.items()}
    for procs in running.values():
        for proc in procs:
            proc.kill()
            proc.wait()


def test_kitty_processes_finds_ours_by_their_path_and_nothing_else(shell, processes):
    name, path = shell
    paths, pids = processes
    fact = KittyProcesses()
    done = run(name, fact.command(paths), path)
    assert done.returncode == 0, done.stderr
    found = dict(fact.process(done.stdout.splitlines()))
    assert set(found) == pids["ours"], done.stdout
    assert all(args.split()[0].startswith(paths[0]) or "/.venv/bin/rq" in args for args in found.values())


def test_kitty_processes_finds_nothing_when_none_of_ours_runs(shell, tmp_path):
    name, path = shell
    fact = KittyProcesses()
    done = run(name, fact.command([f"{tmp_path}/nothing-runs-here/"]), path)
    assert done.returncode == 0 and fact.process(done.stdout.splitlines()) == []


# --- The launchd bootout wait ---------------------------------------------------------------


@pytest.fixture
def fake_launchd(tmp_path, shell):
    """PATH with the fake launchctl first, and its state folder: `left` prints still loaded after bootout."""
    name, path = shell
    bin_dir = executable(tmp_path / "fake-bin" / "launchctl", FAKE_LAUNCHCTL).parent
    state = tmp_path / "launchd"
    state.mkdir()

    def go(command: str, left: int, exit_timeout: int | None = None) -> tuple[subprocess.CompletedProcess, list[str]]:
        (state / "left").write_text(f"{left}\n")
        if exit_timeout is not None:
            (state / "timeout").write_text(f"{exit_timeout}\n")
        done = run(name, command, f"{bin_dir}:{path}", env={"FAKE": str(state)})
        calls = (state / "calls").read_text().splitlines()
        (state / "calls").unlink()
        return done, calls

    return go


def test_the_converges_bootout_waits_until_print_no_longer_finds_the_job(fake_launchd):
    done, calls = fake_launchd(launchd._bootout(SERVICE), left=2, exit_timeout=10)
    assert done.returncode == 0, done.stderr
    # The job's exit timeout read first; bootout, then print until it fails: once still loaded, then gone.
    assert calls == [f"print {SERVICE}", f"bootout {SERVICE}", f"print {SERVICE}", f"print {SERVICE}"]


def test_the_converges_bootout_fails_naming_the_job_when_it_never_goes(fake_launchd, monkeypatch):
    monkeypatch.setattr(launchd, "BOOTOUT_MARGIN", 1)
    done, calls = fake_launchd(launchd._bootout(SERVICE), left=100, exit_timeout=0)
    assert done.returncode == 1
    assert (
        f"{SERVICE} is still loaded 1s after launchctl bootout (its exit timeout + 1s; exit 36: Boot-out failed"
        in done.stderr
    )
    assert calls[1] == f"bootout {SERVICE}" and calls.count(f"print {SERVICE}") == 3


def test_stops_bootout_waits_and_reports_how_long_the_stop_took(fake_launchd):
    target = supervise_stop.Target("server q4", LABEL, "", stop_timeout=30)
    done, calls = fake_launchd(supervise_stop._bootout_timed(SERVICE, target, emergency=False), left=1)
    assert done.returncode == 0, done.stderr
    assert calls == [f"bootout {SERVICE}", f"print {SERVICE}", f"print {SERVICE}"]
    seconds, killed = supervise_stop._parse(done.stdout.splitlines())
    # One one-second wait: stopped well within its ExitTimeOut, so not killed by launchd.
    assert seconds is not None and 1 <= seconds < 30 and not killed
    assert done.stdout.split()[-1] == "30"


def test_stops_bootout_fails_when_the_job_outlives_its_timeout_and_the_grace(fake_launchd, monkeypatch):
    monkeypatch.setattr(supervise_stop, "GRACE", 1)
    target = supervise_stop.Target("server q4", LABEL, "", stop_timeout=0)
    done, calls = fake_launchd(supervise_stop._bootout_timed(SERVICE, target, emergency=False), left=100)
    assert done.returncode == 1
    assert f"{SERVICE} still loaded after bootout" in done.stderr
    assert calls.count(f"print {SERVICE}") == 2


def test_an_emergency_stop_says_no_timeout_applied(fake_launchd):
    target = supervise_stop.Target("server q4", LABEL, "", stop_timeout=30)
    done, _ = fake_launchd(supervise_stop._bootout_timed(SERVICE, target, emergency=True), left=0)
    assert done.returncode == 0 and done.stdout.split()[-1] == "0"
    assert supervise_stop._parse(done.stdout.splitlines())[1] is False


def test_a_bootout_without_a_known_timeout_takes_launchds_default_of_20(fake_launchd):
    """No PlistBuddy here (as on a Mac without the plist or its key): launchd's default ExitTimeOut, 20 s."""
    target = supervise_stop.Target("server q4", LABEL, "")
    done, _ = fake_launchd(supervise_stop._bootout_timed(SERVICE, target, emergency=False), left=0)
    assert done.returncode == 0 and done.stdout.split()[-1] == "20"
