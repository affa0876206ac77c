"""tasks.launchd.job planned against simulated Macs: the exact launchctl sequence per case.

The deploy under test is tests/plan/deploys/launchd_job.py (server q4 as a
LaunchDaemon). The second half runs the generated bootout/bootstrap commands
against a scripted `launchctl` to show the quirks are really handled.
"""

import copy
import os
import re
import stat
import subprocess

import pytest
from pyinfra.api.exceptions import PyinfraError

from tasks import config, launchd
from tests.plan import hosts, launchd_facts
from tests.plan.harness import group_data, plan

DEPLOY = "tests/plan/deploys/launchd_job.py"
LABEL = "com.kitty.llama-server.q4"
TARGET = f"system/{LABEL}"
PLIST = f"/Library/LaunchDaemons/{LABEL}.plist"
INPUTS = "/opt/kitty/state/launchd/q4.inputs"
DEFAULTS = {key: value for key, value in group_data().items() if key.startswith("kitty_")}


def rendered(**q4_changes) -> str:
    """The plist the deploy renders for q4, with `q4_changes` applied to its server."""
    data = copy.deepcopy(DEFAULTS)
    data["kitty_servers"]["q4"].update(q4_changes)
    cfg = config.load(data)
    return launchd.server_plist(
        cfg, "q4", cfg.servers["q4"], binary="/opt/kitty/current/bin/llama-server", user="admin"
    )


def mac(*, loaded, plist, disabled=False, inputs=None, plist_mode="rw-r--r--", plist_user="root") -> dict:
    """A converged Mac whose q4 job is in the given state; `plist`/`inputs` are the files on disk."""
    # The rest of the Mac converged first; this job's state on top (first match wins, later keys replace).
    facts = dict(hosts.macos_converged())
    facts.update(launchd_facts.job(TARGET, loaded=loaded, disabled=disabled))
    facts.update(launchd_facts.file(PLIST, plist, mode=plist_mode, user=plist_user))
    facts.update(launchd_facts.file(INPUTS, inputs))
    facts.update(launchd_facts.directory("/Library/LaunchDaemons"))
    facts.update(launchd_facts.directory("/opt/kitty/state/launchd"))
    return facts


def steps(result) -> list[str]:
    """Each planned command as a short step: a launchctl verb and its target, or a file change."""
    out = []
    for command in result.commands:
        verb = re.search(r"launchctl (bootout \S+|bootstrap \S+ \S+|enable \S+|kickstart -k \S+|disable \S+)", command)
        upload = re.match(r"FileUploadCommand\(.*, (\S+)\)$", command)
        if verb:
            out.append(verb.group(1))
        elif upload:
            out.append(f"upload {upload.group(1)}")
        else:
            out.append(command)
    return out


def run(facts, *, enabled=True, inputs=None):
    data = {"launchd_test_inputs": inputs}
    if not enabled:
        servers = copy.deepcopy(DEFAULTS["kitty_servers"])
        servers["q4"]["enabled"] = False
        data["kitty_servers"] = servers
    return plan(facts, data=data, deploy_file=DEPLOY)


def test_fresh_mac_writes_a_root_owned_plist_then_bootstraps():
    result = run(mac(loaded=False, plist=None))
    assert steps(result) == [
        f"upload {PLIST}",
        f"chown root:wheel {PLIST}",
        f"chmod 644 {PLIST}",
        f"bootstrap system {PLIST}",
    ]


def test_unchanged_job_plans_nothing():
    assert run(mac(loaded=True, plist=rendered())).ops == []


def test_a_changed_flag_boots_out_before_writing_then_bootstraps():
    result = run(mac(loaded=True, plist=rendered(ctx_size=8192)))
    assert steps(result) == [
        f"bootout {TARGET}",
        f"upload {PLIST}",
        f"chown root:wheel {PLIST}",
        f"chmod 644 {PLIST}",
        f"bootstrap system {PLIST}",
    ]


def test_plist_on_disk_but_not_loaded_is_bootstrapped_without_a_bootout():
    assert steps(run(mac(loaded=False, plist=rendered()))) == [f"bootstrap system {PLIST}"]


def test_only_inputs_changed_restarts_in_place_then_records_them():
    result = run(mac(loaded=True, plist=rendered(), inputs="build-1\n"), inputs="build-2")
    assert steps(result) == [
        f"kickstart -k {TARGET}",
        f"upload {INPUTS}",
        f"chown root {INPUTS}",
        f"chmod 644 {INPUTS}",
    ]


def test_same_inputs_restart_nothing():
    assert run(mac(loaded=True, plist=rendered(), inputs="build-2\n"), inputs="build-2").ops == []


def test_a_new_plist_and_new_inputs_need_one_reload_only():
    result = run(mac(loaded=True, plist=rendered(ctx_size=8192), inputs="build-1\n"), inputs="build-2")
    launchctl = [step for step in steps(result) if not step.startswith(("upload", "chown", "chmod"))]
    assert launchctl == [f"bootout {TARGET}", f"bootstrap system {PLIST}"]


def test_a_disabled_server_is_booted_out_and_its_plist_deleted():
    result = run(mac(loaded=True, plist=rendered()), enabled=False)
    assert steps(result) == [f"bootout {TARGET}", f"rm -f {PLIST}"]


def test_a_disabled_server_already_gone_plans_nothing():
    assert run(mac(loaded=False, plist=None), enabled=False).ops == []


def test_a_disabled_override_is_lifted_without_a_restart():
    assert steps(run(mac(loaded=True, plist=rendered(), disabled=True))) == [f"enable {TARGET}"]


def test_a_disabled_override_is_lifted_before_bootstrap():
    assert steps(run(mac(loaded=False, plist=rendered(), disabled=True))) == [
        f"enable {TARGET}",
        f"bootstrap system {PLIST}",
    ]


def test_wrong_owner_or_mode_is_fixed_without_a_restart():
    result = run(mac(loaded=True, plist=rendered(), plist_mode="rw-rw-rw-", plist_user="admin"))
    assert steps(result) == [f"chmod 644 {PLIST}", f"chown root:wheel {PLIST}"]


def test_an_unreadable_launchctl_answer_stops_the_deploy_by_name():
    facts = mac(loaded=True, plist=rendered())
    facts[f"launchctl print {TARGET} 2>&1"] = ["Unrecognized target specifier.", f"{launchd.EXIT_MARKER}64"]
    with pytest.raises(PyinfraError, match=f"launchctl print {TARGET} failed \\(exit 64"):
        run(facts)


def test_the_state_is_asked_of_the_job_in_the_system_domain():
    result = run(mac(loaded=False, plist=None))
    asked = [command for command, _ in result.executed if f"launchctl print {TARGET} 2>&1" in command]
    assert asked, "the job's state was never asked"
    assert all("launchctl print-disabled system " in command for command in asked)


# --- The generated commands against a scripted launchctl ----------------------

FAKE_LAUNCHCTL = r"""#!/bin/sh
# A scripted launchctl. State in $LC: `loaded` exists while the job is loaded;
# `linger` holds how many more prints still find it after a bootout.
echo "$*" >> "$LC/calls"
case "$1" in
print)
    if [ -f "$LC/linger" ]; then
        n=$(cat "$LC/linger")
        if [ "$n" -le 0 ]; then rm -f "$LC/loaded" "$LC/linger"; else echo $((n - 1)) > "$LC/linger"; fi
    fi
    if [ -f "$LC/loaded" ]; then echo "$2 = {"; echo "	state = running"; echo "}"; exit 0; fi
    echo "Could not find service \"x\" in domain for system"; exit 113 ;;
bootout)
    echo "${LINGER:-0}" > "$LC/linger"
    if [ "${BOOTOUT_RC:-0}" != 0 ]; then echo "Boot-out failed: 36: Operation now in progress" >&2; fi
    exit "${BOOTOUT_RC:-0}" ;;
bootstrap)
    tries=$(cat "$LC/tries" 2>/dev/null || echo 0); echo $((tries + 1)) > "$LC/tries"
    if [ "$tries" -lt "${BOOTSTRAP_FAILS:-0}" ]; then
        [ -n "$LOADS_ANYWAY" ] && touch "$LC/loaded"
        echo "Bootstrap failed: 5: Input/output error" >&2; exit 5
    fi
    touch "$LC/loaded"; exit 0 ;;
esac
exit 64
"""


@pytest.fixture
def launchctl(tmp_path):
    """Run a command with the scripted launchctl (and an instant sleep) first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("launchctl", FAKE_LAUNCHCTL), ("sleep", "#!/bin/sh\nexit 0\n")):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(stat.S_IRWXU)

    def call(command, *, loaded, **env):
        if loaded:
            (tmp_path / "loaded").touch()
        environment = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LC": str(tmp_path), **env}
        done = subprocess.run(["sh", "-c", command], env=environment, capture_output=True, text=True, timeout=20)
        calls = (tmp_path / "calls").read_text().splitlines()
        return done.returncode, done.stderr, [line.split()[0] for line in calls], (tmp_path / "loaded").exists()

    return call


def test_bootout_36_waits_until_print_no_longer_finds_the_job(launchctl):
    rc, err, calls, loaded = launchctl(launchd._bootout(TARGET, 5), loaded=True, BOOTOUT_RC="36", LINGER="2")
    assert (rc, loaded) == (0, False), err
    assert calls == ["bootout", "print", "print", "print"]


def test_a_job_that_never_leaves_fails_with_bootouts_own_words(launchctl):
    rc, err, calls, loaded = launchctl(launchd._bootout(TARGET, 3), loaded=True, BOOTOUT_RC="36", LINGER="99")
    assert rc == 1 and loaded
    assert f"{TARGET} is still loaded 3s after launchctl bootout (exit 36: Boot-out failed: 36" in err
    assert calls.count("print") == 4


def test_bootstrap_that_fails_but_loads_is_a_success(launchctl):
    command = launchd._bootstrap("system", PLIST, TARGET, 5)
    rc, err, calls, loaded = launchctl(command, loaded=False, BOOTSTRAP_FAILS="9", LOADS_ANYWAY="1")
    assert (rc, loaded) == (0, True), err
    assert calls == ["bootstrap", "print"]


def test_bootstrap_is_retried_while_the_old_job_settles(launchctl):
    command = launchd._bootstrap("system", PLIST, TARGET, 5)
    rc, err, calls, loaded = launchctl(command, loaded=False, BOOTSTRAP_FAILS="2")
    assert (rc, loaded) == (0, True), err
    assert calls == ["bootstrap", "print", "bootstrap", "print", "bootstrap"]


def test_bootstrap_that_never_loads_fails_with_launchctls_message(launchctl):
    command = launchd._bootstrap("system", PLIST, TARGET, 2)
    rc, err, calls, loaded = launchctl(command, loaded=False, BOOTSTRAP_FAILS="99")
    assert rc == 1 and not loaded
    assert f"launchctl bootstrap of {TARGET} did not load it in 2s: Bootstrap failed: 5: Input/output error" in err
    assert calls.count("bootstrap") == 3
