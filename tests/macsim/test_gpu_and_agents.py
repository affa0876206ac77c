"""The GPU really used, and LaunchAgents in the admin's GUI session, on the simulated Mac (issue 25).

The stub llama-server prints Metal's real load lines (at --log-verbosity 4); whether
Metal gives a process a device is the machine's (/var/db/macsim/metal): `all`, or `gui`
as seen on Mac Studios (a LaunchDaemon gets none, the GUI session's LaunchAgent does).
"""

from __future__ import annotations

import copy

import pytest

from tests.macsim.harness import group_data

pytestmark = pytest.mark.e2e

DATA = group_data()
PREFIX = DATA["kitty_launchd"]["label_prefix"]
NAMES = ("q4", "summary")
AGENTS = "/home/admin/Library/LaunchAgents"


def label(name: str) -> str:
    return f"{PREFIX}{name}"


def launchd(kind: str) -> dict:
    return {"kitty_launchd": {**DATA["kitty_launchd"], "kind": kind}}


def servers(**changes) -> dict:
    found = copy.deepcopy(DATA["kitty_servers"])
    for name, change in changes.items():
        found[name].update(change)
    return {"kitty_servers": found}


def metal(mac, policy: str) -> None:
    mac.check(f"echo {policy} > /var/db/macsim/metal")


def ok(result):
    assert result.code == 0, result.output[-5000:]
    assert result.rejected() == [], result.rejected()
    return result


@pytest.fixture(scope="module")
def mac(simulated_mac):
    simulated_mac.seed_build(DATA["kitty_llamacpp"]["ref"])
    metal(simulated_mac, "all")
    first = ok(simulated_mac.converge())
    for name in NAMES:
        assert f"[health] server {name}: layers on MTL0 (Apple M3 Ultra) (31/31)" in first.output
    # The health table has a column for it.
    rows = [line for line in first.output.splitlines() if "server q4" in line and "  healthy  " in line]
    assert rows and rows[-1].rstrip().endswith("layers on MTL0 (Apple M3 Ultra) (31/31)"), rows
    return simulated_mac


def test_a_daemon_metal_gives_no_device_is_degraded_on_cpu_and_fails_with_the_remedy(mac):
    metal(mac, "gui")
    try:
        result = mac.converge(servers(q4={"ctx_size": 1024}))
        assert result.code != 0
        assert "[health] server q4: DEGRADED, on CPU (asked for 999 GPU layers)" in result.output
        assert "server q4: degraded: on CPU (asked for 999 GPU layers)." in result.output
        assert "kitty_launchd.kind = 'agent'" in result.output
        # It serves: nothing is rolled back.
        assert "Rolled back" not in result.output and result.starts() == {label("q4"): 1}
        # diagnose names it, with the same remedy.
        diagnosed = mac.run("diagnose.py", servers(q4={"ctx_size": 1024}))
        assert diagnosed.code != 0
        assert "server q4: degraded: on CPU (asked for 999 GPU layers)" in diagnosed.output
        assert "LaunchAgents in the admin's GUI session" in diagnosed.output
    finally:
        metal(mac, "all")
    back = ok(mac.converge())
    assert back.starts() == {label("q4"): 1}


def test_servers_as_launchagents_in_the_gui_session_get_metal_where_daemons_do_not(mac):
    metal(mac, "gui")
    uid = mac.check("id -u admin").strip()
    try:
        moved = ok(mac.converge(launchd("agent")))
        assert moved.starts() == {label(name): 1 for name in NAMES}
        for name in NAMES:
            assert f"[health] server {name}: layers on MTL0 (Apple M3 Ultra) (31/31)" in moved.output
            assert mac.exec(f"launchctl print system/{label(name)}").returncode == 113
            assert mac.exec(f"test -e /Library/LaunchDaemons/{label(name)}.plist").returncode != 0
            printed = mac.check(f"launchctl print gui/{uid}/{label(name)}")
            assert "type = LaunchAgent" in printed and "username = admin" in printed
            assert mac.check(f"stat -f '%Su %Lp' {AGENTS}/{label(name)}.plist").strip() == "admin 644"
        # The daemons were booted out before the agents were bootstrapped: never both on one port.
        verbs = [(c["argv"][1], c["argv"][2]) for c in moved.calls if c["argv"][1] in ("bootout", "bootstrap")]
        assert verbs.index(("bootout", f"system/{label('q4')}")) < verbs.index(("bootstrap", f"gui/{uid}"))
        assert ok(mac.converge(launchd("agent"))).starts() == {}
        # stop.py stops the agents, deploy.py starts them again.
        stopped = ok(mac.run("stop.py", launchd("agent")))
        assert all(mac.exec(f"launchctl print gui/{uid}/{label(n)}").returncode == 113 for n in NAMES)
        assert stopped.starts() == {}
        assert ok(mac.converge(launchd("agent"))).starts() == {label(name): 1 for name in NAMES}
    finally:
        metal(mac, "all")


def test_agents_without_a_gui_login_are_refused_with_what_to_do(mac):
    mac.check("cp /var/db/macsim/gui-sessions /tmp/gui-sessions && : > /var/db/macsim/gui-sessions")
    try:
        result = mac.converge(launchd("agent"))
        assert result.code != 0
        assert "which does not exist now" in result.output and "Automatically log in" in result.output
    finally:
        mac.check("cp /tmp/gui-sessions /var/db/macsim/gui-sessions")


def test_back_to_daemons_removes_the_agents(mac):
    uid = mac.check("id -u admin").strip()
    result = ok(mac.converge(launchd("daemon")))
    assert result.starts() == {label(name): 1 for name in NAMES}
    for name in NAMES:
        assert mac.exec(f"launchctl print gui/{uid}/{label(name)}").returncode == 113
        assert mac.exec(f"test -e {AGENTS}/{label(name)}.plist").returncode != 0
        assert mac.exec(f"launchctl print system/{label(name)}").returncode == 0
    assert ok(mac.converge()).starts() == {}
