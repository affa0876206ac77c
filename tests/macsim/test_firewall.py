"""The firewall's pf side (tasks/system/firewall.py, issue 26 item 8), converged for real on a simulated Mac.

The sim Mac's pfctl (sandbox/macsim/shims/pfctl) keeps anchors and pf's status and refuses lines
outside the grammar kitty-ops writes; it filters nothing (no pf in a Linux container): what this
proves is the converge's side, over SSH with sudo and launchd's rules. A server beyond loopback
gets its anchor loaded under com.apple/, pf enabled and a boot LaunchDaemon that loads it again;
a second converge loads nothing; the anchor, its file and its job go with the last such server.
"""

from __future__ import annotations

import copy
import os

import pytest

from tasks.system import firewall
from tests.macsim.harness import group_data

pytestmark = pytest.mark.e2e


def wide() -> dict:
    servers = copy.deepcopy(group_data()["kitty_servers"])
    servers["q4"] = {
        **servers["q4"],
        "host": "0.0.0.0",
        "api_key_file": "/opt/kitty/keys/q4.key",
        "allow_from": ["192.168.1.0/24"],
    }
    return {"kitty_servers": servers}


@pytest.fixture(scope="module")
def first(simulated_mac, tmp_path_factory):
    keys = os.environ.get("KITTY_KEYS_DIR")
    os.environ["KITTY_KEYS_DIR"] = str(tmp_path_factory.mktemp("keys"))
    try:
        simulated_mac.seed_build(group_data()["kitty_llamacpp"]["ref"])
        yield simulated_mac.converge(data=wide())
    finally:
        if keys is None:
            os.environ.pop("KITTY_KEYS_DIR", None)
        else:
            os.environ["KITTY_KEYS_DIR"] = keys


def test_a_server_beyond_loopback_gets_its_anchor_pf_on_and_a_boot_job(simulated_mac, first):
    assert first.code == 0, first.output[-4000:]
    assert first.rejected() == []
    rules = simulated_mac.check(f"pfctl -a {firewall.PF_ANCHOR} -sr")
    assert "pass in quick on lo0 proto tcp from any to any port 8083" in rules
    assert "pass in quick proto tcp from <kitty_8083> to any port 8083" in rules
    assert "block return in quick proto tcp from any to any port 8083" in rules
    assert "192.168.1.0/24" in simulated_mac.check(f"cat {firewall.PF_FILE}")
    assert simulated_mac.check("pfctl -s info").startswith("Status: Enabled")
    # The boot job ran once when it was loaded (it runs again at every boot), as root.
    assert first.starts().get(firewall.PF_LABEL) == 1
    assert simulated_mac.check(f"stat -f '%Su:%Sg %Lp' {firewall.PF_FILE}").strip() == "root:wheel 644"


def test_a_second_converge_loads_nothing(simulated_mac, first):
    simulated_mac.check(": > /var/log/macsim/pfctl.log")
    again = simulated_mac.converge(data=wide())
    assert again.code == 0, again.output[-4000:]
    assert again.starts() == {} and again.rejected() == []
    assert " -f " not in simulated_mac.check("cat /var/log/macsim/pfctl.log")


def test_the_anchor_goes_with_the_last_server_beyond_loopback(simulated_mac, first):
    back = simulated_mac.converge()
    assert back.code == 0, back.output[-4000:]
    assert back.rejected() == []
    assert simulated_mac.check(f"pfctl -a {firewall.PF_ANCHOR} -sr").strip() == ""
    assert simulated_mac.exec(f"test -e {firewall.PF_FILE}").returncode != 0
    assert simulated_mac.exec(f"test -e /Library/LaunchDaemons/{firewall.PF_LABEL}.plist").returncode != 0
    # And a converge after that touches pf no more.
    simulated_mac.check(": > /var/log/macsim/pfctl.log")
    assert simulated_mac.converge().code == 0
    assert simulated_mac.check("cat /var/log/macsim/pfctl.log").strip() == ""
