"""The supervisor scenarios, executed for real against a simulated Mac whose launchctl follows launchd's rules.

Each converge is a real pyinfra run over SSH; launchctl there refuses what
real launchctl refuses (113 for a job that is not loaded, 5/37 for a
bootstrap of a loaded or settling job, 119 for a disabled one). Each scenario
asserts which jobs started (launchd spawned a process), exactly once each, and
that no call was refused. tests/e2e/test_restart_scenarios.py runs the same
scenarios on systemd, tests/plan/test_supervise_scenarios.py plans them.
"""

from __future__ import annotations

import copy
import time

import pytest

from tasks import config
from tasks.host import layout
from tests.macsim.harness import group_data

pytestmark = pytest.mark.e2e

DATA = group_data()
CFG = config.load(DATA)
PREFIX = DATA["kitty_launchd"]["label_prefix"]
NEW_REF = "b11500"


def label(name: str) -> str:
    return f"{PREFIX}{name}"


def servers(**changes) -> dict:
    found = copy.deepcopy(DATA["kitty_servers"])
    for name, change in changes.items():
        if change is None:
            del found[name]
        else:
            found[name].update(change)
    return {"kitty_servers": found}


def ref(value: str) -> dict:
    return {"kitty_llamacpp": {**DATA["kitty_llamacpp"], "ref": value}}


def converged(mac, data=None):
    result = mac.converge(data)
    assert result.code == 0, result.output[-4000:]
    assert result.rejected() == [], result.rejected()
    return result


def loaded(mac, name: str) -> bool:
    return mac.exec(f"launchctl print system/{label(name)}").returncode == 0


@pytest.fixture(scope="module")
def mac(simulated_mac):
    simulated_mac.seed_build(DATA["kitty_llamacpp"]["ref"])
    simulated_mac.seed_build(NEW_REF)
    first = converged(simulated_mac)
    assert first.starts() == {label("q4"): 1, label("summary"): 1, "com.kitty.iogpu-wired-limit": 1}
    return simulated_mac


def test_no_change_starts_nothing(mac):
    result = converged(mac)
    assert result.starts() == {}
    assert not [c for c in result.calls if c["argv"][1] in ("bootstrap", "bootout", "kickstart")]


def test_one_flag_reloads_that_job_once(mac):
    result = converged(mac, servers(summary={"ctx_size": 2048}))
    assert result.starts() == {label("summary"): 1}
    verbs = [c["argv"][1] for c in result.calls if c["argv"][1] in ("bootstrap", "bootout", "kickstart")]
    assert verbs == ["bootout", "bootstrap"]
    assert converged(mac).starts() == {label("summary"): 1}


def test_a_new_llamacpp_ref_restarts_each_job_once_through_bootout_and_bootstrap(mac):
    """Never `kickstart -k`: its SIGKILL would end in-flight requests (issue 25, defect 3)."""
    result = converged(mac, ref(NEW_REF))
    assert result.starts() == {label("q4"): 1, label("summary"): 1}
    assert [c["argv"][1:3] for c in result.calls if c["argv"][1] in ("bootstrap", "bootout", "kickstart")] == [
        ["bootout", f"system/{label('q4')}"],
        ["bootstrap", "system"],
        ["bootout", f"system/{label('summary')}"],
        ["bootstrap", "system"],
    ]
    # Each server ended on SIGTERM (launchd's stop), not SIGKILL.
    for name in ("q4", "summary"):
        printed = mac.check(f"launchctl print system/{label(name)}")
        assert "Killed: 9" not in printed
    assert converged(mac).starts() == {label("q4"): 1, label("summary"): 1}


def test_a_replaced_model_file_restarts_the_server_that_uses_it(mac):
    model = CFG.models[CFG.servers["q4"].model]
    path = f"{CFG.paths.models_dir}/{model.dir}/{model.files[0].name}"
    # Size and sha256 kept, mtime changed: the stamp no longer matches, the file is verified again.
    mac.check(f"touch {path}")
    result = converged(mac)
    assert result.starts() == {label("q4"): 1}


def test_a_disabled_job_is_removed_and_never_kickstarted(mac):
    result = converged(mac, servers(q4={"enabled": False}))
    assert result.starts() == {}
    assert not loaded(mac, "q4")
    assert mac.exec(f"test -e /Library/LaunchDaemons/{label('q4')}.plist").returncode != 0
    # A new ref while q4 is disabled (issue 12, defect 2): only summary restarts; no kickstart of q4.
    data = {**servers(q4={"enabled": False}), **ref(NEW_REF)}
    result = converged(mac, data)
    assert result.starts() == {label("summary"): 1}
    assert not [c for c in result.calls if label("q4") in " ".join(c["argv"]) and c["argv"][1] != "print"]
    back = converged(mac)
    assert back.starts() == {label("q4"): 1, label("summary"): 1}


def test_a_job_deleted_from_group_data_is_booted_out_and_its_plist_removed(mac):
    result = converged(mac, servers(summary=None))
    assert result.starts() == {}
    assert not loaded(mac, "summary")
    assert mac.exec(f"test -e /Library/LaunchDaemons/{label('summary')}.plist").returncode != 0
    assert converged(mac).starts() == {label("summary"): 1}


def test_a_converge_stopped_after_current_moved_is_finished_by_the_next(mac):
    root = layout.llamacpp_dir(CFG)
    for name in CFG.enabled_servers():
        record = f"{layout.records_dir(CFG)}/{label(name)}.started"
        mac.check(f"sed -i '' 's|^input llama.cpp=.*|input llama.cpp={root}/builds/an-older-build|' {record}")
    result = converged(mac)
    assert result.starts() == {label("q4"): 1, label("summary"): 1}
    assert "llama.cpp an-older-build →" in result.output
    assert converged(mac).starts() == {}


def test_a_job_disabled_by_hand_is_enabled_and_bootstrapped(mac):
    """`launchctl disable` + bootout (what a stop leaves): bootstrap alone would be refused (119)."""
    mac.check(f"launchctl disable system/{label('q4')} && launchctl bootout system/{label('q4')}")
    result = converged(mac)
    assert result.starts() == {label("q4"): 1}
    argv = [c["argv"][1:] for c in result.calls if c["argv"][1] in ("enable", "bootstrap")]
    assert argv[0] == ["enable", f"system/{label('q4')}"]


# --- Safe changes (issue 13): checked before anything moves, fail fast, roll back -----------------


def verbs(result) -> list[str]:
    return [c["argv"][1] for c in result.calls if c["argv"][1] in ("bootstrap", "bootout", "kickstart")]


def test_an_unknown_flag_is_refused_before_launchd_is_touched(mac):
    pid = mac.check(f"launchctl print system/{label('summary')} | sed -n 's/^[[:space:]]*pid = //p'")
    result = mac.converge(servers(summary={"extra_args": ["--no-such-flag"]}))
    assert result.code != 0
    assert "kitty_servers.summary.extra_args: --no-such-flag is not a flag of llama-server b11434" in result.output
    assert verbs(result) == [] and result.starts() == {}
    assert mac.check(f"launchctl print system/{label('summary')} | sed -n 's/^[[:space:]]*pid = //p'") == pid


def test_a_job_that_dies_at_start_is_reported_fast_and_its_previous_plist_put_back(mac):
    plist = f"/Library/LaunchDaemons/{label('summary')}.plist"
    before = mac.check(f"cat {plist}")
    started = time.monotonic()
    result = mac.converge(servers(summary={"extra_args": ["--cache-type-k", "bogus"]}))
    seconds = time.monotonic() - started
    print(f"failed start reported and rolled back in {seconds:.1f} s")
    assert result.code != 0
    assert result.rejected() == [], result.rejected()
    assert "server summary: tried reload (--cache-type-k added (bogus))" in result.output, result.output[-4000:]
    assert "launchd: state = not running, last exit code = 1" in result.output
    assert "Unsupported cache type: bogus" in result.output
    assert "Rolled back server summary: the previous configuration serves again." in result.output
    # bootout, bootstrap of the new plist; bootout, bootstrap of the previous one.
    assert verbs(result) == ["bootout", "bootstrap", "bootout", "bootstrap"]
    assert mac.check(f"cat {plist}") == before
    assert "bogus" not in " ".join(mac.exec(f"launchctl print system/{label('summary')}").stdout.split())
    again = converged(mac)
    assert again.starts() == {} and verbs(again) == []
    assert "nothing will restart" in again.output


def test_a_build_whose_server_cannot_start_puts_current_back(mac):
    root = layout.llamacpp_dir(CFG)
    good = mac.check(f"readlink {root}/current").strip()
    bad = mac.seed_build("b11600")
    binary = f"{root}/builds/{bad}/bin/llama-server"
    # It proves itself on the smoke test's tiny model (no --alias there), and cannot start a server:
    # the restart onto it is rolled back (issue 13), through bootout and bootstrap (issue 25).
    mac.check(
        f"mv {binary} {binary}.real && printf '%s\\n' '#!/bin/sh' "
        f'\'case " $* " in *" --alias "*) ;; *) exec {binary}.real "$@" ;; esac\' '
        f"'echo \"cannot load any model with this build\" >&2' 'exit 3' > {binary} && chmod 755 {binary}"
    )
    result = mac.converge(ref("b11600"))
    assert result.code != 0
    assert result.rejected() == [], result.rejected()
    assert "tried restart (llama.cpp " in result.output, result.output[-4000:]
    assert "the previous configuration serves again" in result.output
    assert mac.check(f"readlink {root}/current").strip() == good
    # Each job: restarted onto the new build, then back onto the good one (bootout, bootstrap each time).
    assert verbs(result) == ["bootout", "bootstrap"] * 4
    again = converged(mac)
    assert again.starts() == {} and "nothing will restart" in again.output


def test_the_restart_table_names_what_changed(mac):
    result = mac.converge(servers(summary={"ctx_size": 2048}), extra_args=["--dry"])
    line = next(line for line in result.output.splitlines() if "server summary " in line and "restart" in line)
    assert "ctx_size 1024 → 2048" in line
    assert "will (re)start or stop: server summary" in result.output


# --- stop.py on a Mac whose sudo wants the admin's password (issue 25) ------------------------


def test_stop_runs_with_the_runs_sudo_password_and_deploy_starts_them_again(mac):
    """Defect 1: stop.py's commands carry the run's password (sudo -n fails on this Mac)."""
    result = mac.run("stop.py")
    assert result.code == 0, result.output[-4000:]
    assert result.rejected() == [], result.rejected()
    assert not loaded(mac, "q4") and not loaded(mac, "summary")
    assert result.starts() == {}
    again = mac.run("stop.py")
    assert again.code == 0 and not [c for c in again.calls if c["argv"][1] in ("bootout", "disable")]
    back = converged(mac)
    assert back.starts() == {label("q4"): 1, label("summary"): 1}


def test_an_emergency_stop_boots_out_first_so_nothing_respawns(mac):
    """Defect 6: a kill while the job is loaded lets KeepAlive respawn it; bootout first, then kill by PID."""
    pid = int(mac.check(f"launchctl print system/{label('q4')} | sed -n 's/^[[:space:]]*pid = //p'"))
    result = mac.run("stop.py", extra_args=["--data", "emergency=true"])
    assert result.code == 0, result.output[-4000:]
    assert result.starts() == {}, "launchd respawned a server during the emergency stop"
    assert not [c for c in result.calls if c["argv"][1] == "kill"]
    assert mac.exec(f"kill -0 {pid}").returncode != 0
    assert not loaded(mac, "q4") and not loaded(mac, "summary")
    back = converged(mac)
    assert back.starts() == {label("q4"): 1, label("summary"): 1}
