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


def printed(mac, label: str) -> dict:
    p = launchctl(mac, "print", f"system/{label}")
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
