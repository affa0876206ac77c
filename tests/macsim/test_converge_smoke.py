"""Today's deploy, converged for real on a simulated Mac (inference role only).

A fresh Mac starts each model server exactly once, through calls real launchctl accepts;
a second converge starts nothing and restarts nothing.
"""

from __future__ import annotations

import pytest

from tests.macsim.harness import group_data

pytestmark = pytest.mark.e2e

# The model servers, and the boot job that sets the Metal wired limit (it runs once when loaded).
LABELS = {f"com.kitty.llama-server.{name}" for name in group_data()["kitty_servers"]} | {"com.kitty.iogpu-wired-limit"}


@pytest.fixture(scope="module")
def first(simulated_mac):
    simulated_mac.seed_build(group_data()["kitty_llamacpp"]["ref"])
    return simulated_mac.converge()


def test_fresh_mac_converges_and_starts_each_server_once(first):
    assert first.code == 0, first.output[-4000:]
    assert first.starts() == dict.fromkeys(LABELS, 1)
    assert first.rejected() == []


def test_servers_answer_on_the_macs_loopback(simulated_mac, first):
    for port, alias in ((8083, "kitty-q4"), (8085, "kitty-summary")):
        body = simulated_mac.check(f"curl -fsS http://127.0.0.1:{port}/v1/models")
        assert f'"id": "{alias}"' in body
    # q4's load_mode reached its plist and the stand-in llama-server (which refuses a mode b11434 does not name).
    log = simulated_mac.check("cat /Users/Shared/Coding/KITT/.logs/llamacpp-q4.log")
    assert "(load_mode = none)" in log and "(load_mode = mmap)" not in log


def test_second_converge_restarts_nothing(simulated_mac, first):
    """Changes nothing at all, although the Mac's hostname changed since (a new network, issue 25)."""
    again = simulated_mac.converge()
    assert again.code == 0, again.output[-4000:]
    assert again.changed() == [], again.changed()
    assert again.starts() == {}
    assert again.rejected() == []
    assert not [c for c in again.calls if c["argv"][1] in ("bootstrap", "bootout", "kickstart")]


def test_a_rotated_log_is_writable_by_the_server_at_its_next_start(simulated_mac, first):
    """newsyslog's new log is the admin's, not root:wheel (issue 25, defect 4): launchd opens it as the job's user."""
    log = "/Users/Shared/Coding/KITT/.logs/llamacpp-summary.log"
    simulated_mac.check("newsyslog -F")
    assert simulated_mac.check(f"stat -f '%Su' {log}").strip() == "admin"
    assert simulated_mac.check(f"wc -c < {log}").strip() == "0"
    data = {"kitty_servers": {**group_data()["kitty_servers"]}}
    data["kitty_servers"]["summary"] = {**data["kitty_servers"]["summary"], "ctx_size": 512}
    restarted = simulated_mac.converge(data)
    assert restarted.code == 0, restarted.output[-4000:]
    assert "starting the main loop" in simulated_mac.check(f"cat {log}")
