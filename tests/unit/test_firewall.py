"""The firewall of ports beyond loopback (tasks/system/firewall.py): who may connect, from the placement,
and the rulesets as nft and pf read them (issue 26, item 8).

Pure: HostView as tasks/placement.views_of reads it. The plans are in
tests/plan/test_hardening_round_two.py; the nftables side is proven for real on the two-host
sandbox (tests/e2e/test_two_hosts.py: a third address on its network gets no connection).
"""

from __future__ import annotations

import subprocess

import pytest
from pyinfra.api.exceptions import DeployError

from tasks import config
from tasks.config import placement
from tasks.config.placement import HostView
from tasks.system import firewall
from tasks.system.firewall import Rule
from tests.unit.test_rpc_workers import load as cfg

BOTH = ("inference", "application")
INF = ("inference",)
APP = ("application",)


def rules(name: str, *views: HostView) -> list[Rule]:
    by_name = {view.name: view for view in views}
    return firewall.rules_for(name, by_name, placement.compute(views))


def refused(name: str, *views: HostView) -> str:
    with pytest.raises(DeployError) as raised:
        rules(name, *views)
    return str(raised.value)


CFG = cfg()


def test_servers_on_loopback_need_no_firewall():
    assert rules("@local", HostView("@local", BOTH, CFG)) == []


def test_a_server_another_hosts_app_uses_lets_in_that_host_alone():
    mac1 = HostView("studio.local", BOTH, CFG, ["q4", "summary", "vision"], "192.168.1.10")
    mac2 = HostView("studio2.local", INF, CFG, ["f16"], "192.168.1.20")
    assert rules("studio2.local", mac1, mac2) == [Rule(8082, "server f16", ("192.168.1.10",))]
    # Mac 1's servers stay on loopback: nothing to guard there.
    assert rules("studio.local", mac1, mac2) == []


def test_allow_from_adds_addresses_and_networks():
    wide = cfg(f16={"allow_from": ["10.0.0.0/24", "fd00::7"]})
    mac1 = HostView("studio.local", BOTH, wide, ["q4", "summary", "vision"], "192.168.1.10")
    mac2 = HostView("studio2.local", INF, wide, ["f16"], "192.168.1.20")
    (rule,) = rules("studio2.local", mac1, mac2)
    assert rule.clients == ("192.168.1.10", "10.0.0.0/24", "fd00::7")


def test_a_server_beyond_loopback_used_only_here_lets_in_loopback_and_dockers_bridges():
    wide = cfg(q4={"host": "0.0.0.0", "api_key_file": "/opt/kitty/keys/q4.key"})
    (rule,) = rules("a", HostView("a", BOTH, wide))
    assert rule == Rule(8083, "server q4", (), local_app=True)
    nft = firewall.render_nft([rule])
    assert 'tcp dport 8083 iifname "docker0" accept' in nft and 'iifname "br-*"' in nft
    assert nft.index('iif "lo" accept') < nft.index("tcp dport 8083 reject with tcp reset")
    assert "ip saddr" not in nft


def test_an_rpc_worker_lets_in_the_hosts_of_the_servers_split_over_it():
    worker = {"port": 50052, "host": "10.0.0.2", "allow_beyond_loopback": True}
    every = ["q4", "summary", "vision", "f16"]
    main = HostView("a", BOTH, cfg(q4={"rpc_workers": ["b"]}), every, "10.0.0.1")
    b = HostView("b", INF, cfg(worker), [], "10.0.0.2")
    assert rules("b", main, b) == [Rule(50052, "rpc worker", ("10.0.0.1",))]
    # An unused worker beyond loopback: nobody but its own host.
    assert rules("b", HostView("a", BOTH, CFG, every, "10.0.0.1"), b) == [Rule(50052, "rpc worker", ())]


@pytest.mark.parametrize(
    ("address", "why"),
    [(None, "is unknown"), ("studio.local", "'studio.local', a name"), ("127.0.0.1", "'127.0.0.1', loopback")],
)
def test_a_client_without_an_ip_address_is_refused_naming_its_kitty_address(address, why):
    """The e2e's host A was `127.0.0.1` to the inventory: B sees it connect from its network's gateway."""
    app = HostView("@local" if address is None else "app", APP, CFG, None, address)
    inf = HostView("gpu", INF, CFG, ["q4", "summary", "vision", "f16"], "10.0.0.9")
    message = refused("gpu", app, inf)
    assert f"{app.name}: kitty_address: server 'f16' on gpu lets in only the hosts that use it" in message
    assert why in message


def test_a_client_address_is_an_ip_or_a_network_in_the_schema():
    with pytest.raises(config.ConfigError, match=r"kitty_servers.q4.allow_from.0"):
        cfg(q4={"allow_from": ["laptop.local"]})


RULES = [
    Rule(8082, "server f16", ("192.168.1.10", "fd00::7")),
    Rule(50052, "rpc worker", ()),
]


def test_the_nft_ruleset_replaces_its_own_table_whole_and_names_its_hash():
    text = firewall.render_nft(RULES)
    mark = firewall.digest(RULES)
    assert text.splitlines()[1:4] == ["table inet kitty_ops", "delete table inet kitty_ops", "table inet kitty_ops {"]
    assert f'comment "kitty-ops {mark}"' in text
    assert "\t\ttcp dport 8082 ip saddr { 192.168.1.10 } accept\n" in text
    assert "\t\ttcp dport 8082 ip6 saddr { fd00::7 } accept\n" in text
    assert text.index("dport 8082 ip6 saddr") < text.index("tcp dport 8082 reject with tcp reset")
    assert "tcp dport 50052 reject with tcp reset" in text and "dport 50052 ip saddr" not in text
    assert "flush ruleset" not in text and "policy drop" not in text


def test_the_pf_anchor_passes_loopback_and_the_clients_then_refuses():
    text = firewall.render_pf(RULES)
    label = f'label "kitty-ops {firewall.digest(RULES)}"'
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        f"pass in quick on lo0 proto tcp from any to any port 8082 {label}",
        "table <kitty_8082> const { 192.168.1.10, fd00::7 }",
        f"pass in quick proto tcp from <kitty_8082> to any port 8082 {label}",
        f"block return in quick proto tcp from any to any port 8082 {label}",
        f"pass in quick on lo0 proto tcp from any to any port 50052 {label}",
        f"block return in quick proto tcp from any to any port 50052 {label}",
    ]


def test_the_hash_changes_with_any_client_or_port():
    assert firewall.digest(RULES) != firewall.digest([Rule(8082, "server f16", ("192.168.1.11",)), RULES[1]])
    assert firewall.digest(RULES) != firewall.digest(RULES[:1])


def test_the_state_fact_reads_the_hash_from_nft_and_pf():
    state = firewall.FirewallState()
    assert state.process(["file", "loaded 0123456789abcdef", "unit enabled"]) == {
        "file": True,
        "loaded": "0123456789abcdef",
        "enabled": None,
        "unit": True,
    }
    assert state.process([])["file"] is False
    assert state.process(["file", "status Disabled"])["enabled"] is False
    # Its sed, run on what nft and pfctl print.
    for os, listing in (
        ("linux", 'table inet kitty_ops {\n\tcomment "kitty-ops 0123456789abcdef"\n\tchain input {'),
        ("macos", 'pass in quick on lo0 proto tcp from any to any port = 8082 label "kitty-ops 0123456789abcdef"'),
    ):
        command = state.command(os)
        sed = command[command.index("sed -n") : command.index("| head -n 1")]
        done = subprocess.run(["sh", "-c", sed], input=listing, capture_output=True, text=True, check=True)
        assert done.stdout.strip() == "loaded 0123456789abcdef"
