"""The sim Mac's launchctl follows launchd's rules: the scenario tests rely on exactly these.

Each test drives `launchctl` in the container directly (docker exec, as root unless said).
"""

from __future__ import annotations

import plistlib
import time

import pytest

pytestmark = pytest.mark.e2e

DAEMONS = "/Library/LaunchDaemons"


def plist_bytes(label: str, argv: list[str], **extra) -> bytes:
    return plistlib.dumps({"Label": label, "ProgramArguments": argv, **extra})


def install(mac, label: str, argv: list[str], owner="root:wheel", mode="644", **extra) -> str:
    path = f"{DAEMONS}/{label}.plist"
    mac.check(
        f"cat > {path} && chown {owner} {path} && chmod {mode} {path}", input=plist_bytes(label, argv, **extra).decode()
    )
    return path


def launchctl(mac, *args: str, user: str = "root"):
    return mac.exec("launchctl " + " ".join(args), user=user)


def printed(mac, label: str, domain: str = "system") -> dict:
    p = launchctl(mac, "print", f"{domain}/{label}")
    assert p.returncode == 0, p.stderr
    fields = {}
    for line in p.stdout.splitlines():
        if line.startswith("\t") and not line.startswith("\t\t") and " = " in line:
            key, _, value = line.strip().partition(" = ")
            fields[key] = value
    return fields


def wait_gone(mac, label: str, timeout: float = 10) -> float:
    t0 = time.monotonic()
    while launchctl(mac, "print", f"system/{label}").returncode == 0:
        assert time.monotonic() - t0 < timeout, f"{label} still loaded {timeout}s after bootout"
        time.sleep(0.05)
    return time.monotonic() - t0


SLEEPER = ["/bin/sleep", "3600"]
# The shim's settling time after a job's process is gone (MACSIM_BOOTOUT_SETTLE).
SETTLE = 0.7


@pytest.mark.parametrize("verb", ["print", "kickstart", "kickstart -k", "bootout"])
def test_unknown_service_is_113(simulated_mac, verb):
    p = launchctl(simulated_mac, verb, "system/com.example.never-loaded")
    assert p.returncode == 113
    assert "Could not find service" in p.stderr


def test_bootstrap_of_a_loaded_label_fails_with_5(simulated_mac):
    path = install(simulated_mac, "com.example.loaded", SLEEPER, RunAtLoad=True)
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 0
    again = launchctl(simulated_mac, "bootstrap", "system", path)
    assert again.returncode == 5
    assert "Bootstrap failed: 5: Input/output error" in again.stderr
    assert printed(simulated_mac, "com.example.loaded")["runs"] == "1"
    assert launchctl(simulated_mac, "bootout", "system/com.example.loaded").returncode == 0
    wait_gone(simulated_mac, "com.example.loaded")


def test_bootout_takes_a_moment_and_bootstrap_meanwhile_is_37(simulated_mac):
    label = "com.example.settling"
    path = install(simulated_mac, label, SLEEPER, RunAtLoad=True)
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 0
    pid = int(printed(simulated_mac, label)["pid"])
    assert launchctl(simulated_mac, "bootout", f"system/{label}").returncode == 0
    # Right after bootout returns the job is still there, and cannot be bootstrapped.
    assert launchctl(simulated_mac, "print", f"system/{label}").returncode == 0
    early = launchctl(simulated_mac, "bootstrap", "system", path)
    assert early.returncode == 37, early.stderr
    waited = wait_gone(simulated_mac, label)
    assert waited > 0.2
    assert simulated_mac.exec(f"kill -0 {pid}").returncode != 0, "the process outlived its bootout"
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 0
    assert launchctl(simulated_mac, "bootout", f"system/{label}").returncode == 0
    wait_gone(simulated_mac, label)


def test_disabled_stays_disabled_across_bootstraps_until_enable(simulated_mac):
    label = "com.example.disabled"
    path = install(simulated_mac, label, SLEEPER, RunAtLoad=True)
    assert launchctl(simulated_mac, "disable", f"system/{label}").returncode == 0
    overrides = launchctl(simulated_mac, "print-disabled", "system").stdout
    assert f'"{label}" => disabled' in overrides
    for _ in range(2):
        refused = launchctl(simulated_mac, "bootstrap", "system", path)
        assert refused.returncode == 119
        assert "Service is disabled" in refused.stderr
    assert launchctl(simulated_mac, "print", f"system/{label}").returncode == 113
    assert launchctl(simulated_mac, "enable", f"system/{label}").returncode == 0
    assert f'"{label}" => enabled' in launchctl(simulated_mac, "print-disabled", "system").stdout
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 0
    assert printed(simulated_mac, label)["state"] == "running"
    # Disabled while loaded: it keeps running, and a bootout + bootstrap is refused again.
    assert launchctl(simulated_mac, "disable", f"system/{label}").returncode == 0
    assert launchctl(simulated_mac, "bootout", f"system/{label}").returncode == 0
    wait_gone(simulated_mac, label)
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 119
    assert launchctl(simulated_mac, "enable", f"system/{label}").returncode == 0


@pytest.mark.parametrize(
    ("owner", "mode"), [("admin:wheel", "644"), ("root:admin", "644"), ("root:wheel", "664"), ("root:wheel", "666")]
)
def test_plist_with_bad_owner_or_mode_is_refused(simulated_mac, owner, mode):
    label = "com.example.badperm"
    path = install(simulated_mac, label, SLEEPER, owner=owner, mode=mode, RunAtLoad=True)
    p = launchctl(simulated_mac, "bootstrap", "system", path)
    assert p.returncode == 5
    assert "Bootstrap failed: 5: Input/output error" in p.stderr
    assert launchctl(simulated_mac, "print", f"system/{label}").returncode == 113


def test_plist_outside_launchdaemons_or_with_wrong_label_is_refused(simulated_mac):
    simulated_mac.check("mkdir -p /tmp/elsewhere")
    simulated_mac.check(
        "cat > /tmp/elsewhere/com.example.x.plist", input=plist_bytes("com.example.x", SLEEPER).decode()
    )
    assert launchctl(simulated_mac, "bootstrap", "system", "/tmp/elsewhere/com.example.x.plist").returncode == 5
    path = f"{DAEMONS}/com.example.named.plist"
    simulated_mac.check(f"cat > {path}", input=plist_bytes("com.example.other", SLEEPER).decode())
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 5


def test_kickstart_k_restarts_once_and_plain_kickstart_leaves_a_running_job(simulated_mac):
    """`kickstart -k` kills with SIGKILL (launchctl(1)): no SIGTERM, no ExitTimeOut, in-flight work dies."""
    label = "com.example.kick"
    path = install(simulated_mac, label, SLEEPER, RunAtLoad=True, KeepAlive=True)
    simulated_mac.reset_logs()
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 0
    first = int(printed(simulated_mac, label)["pid"])
    assert launchctl(simulated_mac, "kickstart", f"system/{label}").returncode == 0
    assert int(printed(simulated_mac, label)["pid"]) == first
    assert launchctl(simulated_mac, "kickstart", "-k", f"system/{label}").returncode == 0
    fields = printed(simulated_mac, label)
    assert int(fields["pid"]) != first and fields["runs"] == "2"
    assert fields["last terminating signal"] == "Killed: 9"
    assert [s["reason"] for s in simulated_mac.spawns() if s["label"] == label] == ["bootstrap", "kickstart"]
    launchctl(simulated_mac, "bootout", f"system/{label}")
    wait_gone(simulated_mac, label)


def test_keepalive_respawns_a_dead_job_after_its_throttle(simulated_mac):
    label = "com.example.keepalive"
    path = install(simulated_mac, label, SLEEPER, RunAtLoad=True, KeepAlive=True, ThrottleInterval=1)
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 0
    pid = int(printed(simulated_mac, label)["pid"])
    simulated_mac.check(f"kill -KILL {pid}")
    time.sleep(1.3)
    fields = printed(simulated_mac, label)
    assert fields["runs"] == "2"
    assert fields["state"] == "running" and int(fields["pid"]) != pid
    assert fields["last terminating signal"] == "Killed: 9"
    launchctl(simulated_mac, "bootout", f"system/{label}")
    wait_gone(simulated_mac, label)


def test_job_runs_as_its_user_in_its_folder_with_its_environment_and_limits(simulated_mac):
    label = "com.example.identity"
    simulated_mac.check("install -d -o admin /tmp/identity")
    script = 'id -un; id -gn; pwd; echo "$GREETING"; ulimit -n'
    path = install(
        simulated_mac,
        label,
        ["/bin/sh", "-c", script],
        RunAtLoad=True,
        UserName="admin",
        WorkingDirectory="/tmp/identity",
        EnvironmentVariables={"GREETING": "hello"},
        StandardOutPath="/tmp/identity/out.log",
        StandardErrorPath="/tmp/identity/out.log",
        SoftResourceLimits={"NumberOfFiles": 4096},
    )
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 0
    time.sleep(0.5)
    assert simulated_mac.check("cat /tmp/identity/out.log").split() == [
        "admin",
        "admin",
        "/tmp/identity",
        "hello",
        "4096",
    ]
    fields = printed(simulated_mac, label)
    assert fields["state"] == "not running" and fields["last exit code"] == "0"
    assert fields["username"] == "admin"
    launchctl(simulated_mac, "bootout", f"system/{label}")
    wait_gone(simulated_mac, label)


def test_missing_working_directory_is_ex_config(simulated_mac):
    label = "com.example.nowhere"
    path = install(simulated_mac, label, SLEEPER, RunAtLoad=True, WorkingDirectory="/no/such/folder")
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 0
    time.sleep(0.3)
    fields = printed(simulated_mac, label)
    assert fields["state"] == "not running"
    assert fields["last exit code"] == "78: EX_CONFIG"
    launchctl(simulated_mac, "bootout", f"system/{label}")
    wait_gone(simulated_mac, label)


def test_kickstart_k_gives_a_program_no_time_to_stop(simulated_mac):
    """A program that needs seconds to finish on SIGTERM is killed at once by `kickstart -k`."""
    label = "com.example.kick-slow"
    simulated_mac.check("install -d -o admin /tmp/kick-slow")
    script = "trap 'sleep 2; echo finished >> /tmp/kick-slow/out; exit 0' TERM; while :; do sleep 0.1; done"
    path = install(simulated_mac, label, ["/bin/sh", "-c", script], RunAtLoad=True, KeepAlive=True, ExitTimeOut=30)
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 0
    t0 = time.monotonic()
    assert launchctl(simulated_mac, "kickstart", "-k", f"system/{label}").returncode == 0
    assert time.monotonic() - t0 < 1.5
    assert printed(simulated_mac, label)["last terminating signal"] == "Killed: 9"
    assert simulated_mac.exec("cat /tmp/kick-slow/out").returncode != 0, "SIGTERM's handler ran"
    launchctl(simulated_mac, "bootout", f"system/{label}")
    wait_gone(simulated_mac, label, timeout=40)


def test_launchctl_kill_signals_the_job_and_keepalive_respawns_it(simulated_mac):
    label = "com.example.killed"
    path = install(simulated_mac, label, SLEEPER, RunAtLoad=True, KeepAlive=True, ThrottleInterval=1)
    assert launchctl(simulated_mac, "kill", "SIGKILL", "system/com.example.not-loaded").returncode == 113
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 0
    pid = int(printed(simulated_mac, label)["pid"])
    assert launchctl(simulated_mac, "kill", "SIGKILL", f"system/{label}").returncode == 0
    assert simulated_mac.exec(f"kill -0 {pid}").returncode != 0
    # A KeepAlive job killed while loaded comes back after its ThrottleInterval: a stop must boot it out.
    time.sleep(1.3)
    fields = printed(simulated_mac, label)
    assert fields["state"] == "running" and int(fields["pid"]) != pid and fields["runs"] == "2"
    launchctl(simulated_mac, "bootout", f"system/{label}")
    wait_gone(simulated_mac, label)


def test_bootout_waits_for_the_program_to_stop_up_to_its_exit_timeout(simulated_mac):
    label = "com.example.slow-stop"
    script = "trap 'sleep 4; exit 0' TERM; while :; do sleep 0.1; done"
    path = install(simulated_mac, label, ["/bin/sh", "-c", script], RunAtLoad=True, ExitTimeOut=10)
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 0
    assert launchctl(simulated_mac, "bootout", f"system/{label}").returncode == 0
    waited = wait_gone(simulated_mac, label)
    assert waited >= 3.8, f"gone {waited:.1f}s after bootout: before its program stopped"
    # ExitTimeOut shorter than the program's stop: launchd's SIGKILL at ExitTimeOut.
    path = install(simulated_mac, label, ["/bin/sh", "-c", script], RunAtLoad=True, ExitTimeOut=1)
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 0
    assert launchctl(simulated_mac, "bootout", f"system/{label}").returncode == 0
    waited = wait_gone(simulated_mac, label)
    assert 0.9 <= waited < 3.5, f"gone {waited:.1f}s after bootout, ExitTimeOut 1"


def test_colima_stops_its_vm_for_seconds_and_a_killed_one_leaves_stale_files(simulated_mac):
    """colima stub: a real stop time on SIGTERM; after SIGKILL (a power cut) ha.pid stays and start fails."""
    label = "com.example.colima"
    argv = ["/opt/homebrew/bin/colima", "start", "--foreground", "--profile", "default"]
    log = "/tmp/colima-rules.log"
    path = install(
        simulated_mac, label, argv, RunAtLoad=True, KeepAlive=True, UserName="admin", ExitTimeOut=120,
        ThrottleInterval=1, StandardOutPath=log, StandardErrorPath=log,
    )  # fmt: skip
    lima = "/home/admin/.colima/_lima/colima"
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 0
    time.sleep(0.5)
    assert simulated_mac.exec(f"test -S /home/admin/.colima/default/docker.sock -a -f {lima}/ha.pid").returncode == 0
    assert launchctl(simulated_mac, "bootout", f"system/{label}").returncode == 0
    assert wait_gone(simulated_mac, label) >= 2.8
    assert simulated_mac.exec(f"test -e {lima}/ha.pid").returncode != 0
    # Killed: its files stay, and the next start fails on them (lima-vm/lima#5075).
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 0
    time.sleep(0.5)
    assert launchctl(simulated_mac, "kill", "SIGKILL", f"system/{label}").returncode == 0
    assert simulated_mac.exec(f"test -f {lima}/ha.pid -a -S {lima}/ha.sock").returncode == 0
    # KeepAlive respawns it after its ThrottleInterval, and that start fails on the stale files.
    deadline = time.monotonic() + 5
    while (fields := printed(simulated_mac, label)).get("last exit code") != "1" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fields["state"] == "not running" and fields["last exit code"] == "1", fields
    assert "seems to be running" in simulated_mac.check(f"cat {log}")
    launchctl(simulated_mac, "bootout", f"system/{label}")
    wait_gone(simulated_mac, label)
    simulated_mac.check(f"rm -rf /home/admin/.colima {log}")


def agent_plist(mac, label: str, argv: list[str], folder="/home/admin/Library/LaunchAgents", owner="admin", **extra):
    path = f"{folder}/{label}.plist"
    text = plist_bytes(label, argv, **extra).decode()
    mac.check(f"cat > {path} && chown {owner} {path} && chmod 644 {path}", input=text)
    return path


def test_gui_domain_runs_agents_as_its_user_only_while_logged_in(simulated_mac):
    uid = simulated_mac.check("id -u admin").strip()
    label = "com.example.agent"
    simulated_mac.check("install -d -o admin /tmp/agent")
    argv = ["/bin/sh", "-c", "id -un > /tmp/agent/who; exec sleep 3600"]
    path = agent_plist(simulated_mac, label, argv, RunAtLoad=True, UserName="root")
    # A daemon's folder is not an agent's; an agent's plist is not a daemon's.
    daemon = install(simulated_mac, "com.example.agent-in-daemons", SLEEPER, RunAtLoad=True)
    assert launchctl(simulated_mac, "bootstrap", f"gui/{uid}", daemon).returncode == 5
    assert launchctl(simulated_mac, "bootstrap", "system", path).returncode == 5
    assert launchctl(simulated_mac, "bootstrap", f"gui/{uid}", path).returncode == 0
    time.sleep(0.3)
    fields = printed(simulated_mac, f"{label}", domain=f"gui/{uid}")
    assert fields["type"] == "LaunchAgent" and fields["username"] == "admin" and fields["state"] == "running"
    assert simulated_mac.check("cat /tmp/agent/who").strip() == "admin"
    assert launchctl(simulated_mac, "print", f"system/{label}").returncode == 113
    # Logged out of the GUI: its agents end with the session, the domain is gone.
    simulated_mac.check("rm /var/db/macsim/gui-sessions && touch /var/db/macsim/gui-sessions")
    try:
        assert launchctl(simulated_mac, "print", f"gui/{uid}/{label}").returncode == 113
        refused = launchctl(simulated_mac, "bootstrap", f"gui/{uid}", path)
        assert refused.returncode == 125 and "Domain does not support specified action" in refused.stderr
    finally:
        simulated_mac.check(f"echo {uid} > /var/db/macsim/gui-sessions")
    time.sleep(SETTLE + 0.3)
    assert launchctl(simulated_mac, "print", f"gui/{uid}/{label}").returncode == 113


@pytest.mark.parametrize("verb", ["load", "unload", "start", "stop", "list"])
def test_legacy_verbs_are_rejected(simulated_mac, verb):
    p = launchctl(simulated_mac, verb, "system/com.example.x")
    assert p.returncode == 64
    assert "kitty-ops must use bootstrap/bootout/kickstart" in p.stderr


def test_changes_need_root_and_every_call_is_logged(simulated_mac):
    label = "com.example.rootonly"
    path = install(simulated_mac, label, SLEEPER, RunAtLoad=True)
    simulated_mac.reset_logs()
    p = launchctl(simulated_mac, "bootstrap", "system", path, user="admin")
    assert p.returncode == 1 and "Operation not permitted" in p.stderr
    assert launchctl(simulated_mac, "print", f"system/{label}", user="admin").returncode == 113
    calls = simulated_mac.launchctl_calls()
    assert [(c["argv"][1], c["exit"]) for c in calls] == [("bootstrap", 1), ("print", 113)]
