"""Issue 26 in plans of simulated hosts: key files that leave their folder alone, the firewall of
servers beyond loopback, the models' and the app's parent folders.

Executed for real elsewhere: the host scripts in tests/unit/test_backup_scripts.py, the fact shell
in tests/unit/test_fact_shell.py, the firewall on the two-host sandbox (tests/e2e/test_two_hosts.py).
"""

from __future__ import annotations

import copy
import re

import pytest
from pyinfra.api.exceptions import PyinfraError

from tasks.system import firewall
from tests.plan import firewall_facts, hosts, launchd_facts
from tests.plan.harness import plan

OPT = hosts.DEFAULTS["kitty_paths"]["opt_dir"]


@pytest.fixture(autouse=True)
def keys(tmp_path, monkeypatch):
    monkeypatch.setenv("KITTY_KEYS_DIR", str(tmp_path / "keys"))


def keyed_q4(key_file: str | None) -> dict:
    servers = copy.deepcopy(hosts.DEFAULTS["kitty_servers"])
    servers["q4"] = {**servers["q4"], "host": "10.0.0.5", "api_key_file": key_file}
    return {"kitty_servers": servers}


def touching(result, folder: str) -> list[str]:
    """Commands of the plan that change `folder` itself (create, chmod, chown it)."""
    changes = re.compile(rf"(mkdir -p|chmod -?R? ?[0-7]+|chown -?R? ?\S+) {re.escape(folder)}(?=$|[\s;&|)])")
    return [c for c in result.commands if changes.search(c)]


def test_a_key_in_the_deploys_own_folder_gets_that_folder_made_0700():
    result = plan(hosts.linux_converged(), data=keyed_q4(f"{OPT}/keys/q4.key"))
    folder = " ".join(result.op("Folder of server q4's API key").commands)
    assert f"mkdir -p {OPT}/keys" in folder and f"chmod 700 {OPT}/keys" in folder


def test_a_key_elsewhere_never_changes_its_folder():
    """The report: /opt/kitty/q4.key made /opt/kitty 0700 and the service account's."""
    facts = {**hosts.linux_converged(), **launchd_facts.directory(OPT, user="root", group="root")}
    result = plan(facts, data=keyed_q4(f"{OPT}/q4.key"))
    assert not [op.name for op in result.ops if op.name.startswith("Folder of server")]
    assert touching(result, OPT) == []
    assert any(op.name.startswith("API key of server q4") for op in result.ops)


def test_a_key_in_a_folder_that_does_not_exist_is_refused_naming_it():
    with pytest.raises(PyinfraError, match="api_key_file: its folder /etc/kitty-keys does not exist"):
        plan(hosts.linux_converged(), data=keyed_q4("/etc/kitty-keys/q4.key"))


# --- the folders above the models and the app (tasks/host/parent_folders.py) ------------------------


def chains(coding_owner: int, coding_mode: str = "drwxr-xr-x") -> dict:
    """The fact's answer on a Mac whose /Users/Shared/Coding belongs to `coding_owner` (the admin is 501)."""
    lines = ["admin 501"]
    for path in ("/Users/Shared/Coding/KITT", "/Users/Shared/Coding/models"):
        lines += [
            f"path {path}",
            f"folder {coding_mode} {coding_owner} /Users/Shared/Coding",
            "folder drwxrwxrwt 0 /Users/Shared",
            "folder drwxr-xr-x 0 /Users",
            "folder drwxr-xr-x 0 /",
        ]
    return {"echo admin $(id -u": lines}


def test_a_shared_folder_made_first_by_another_user_is_refused_naming_it():
    """The manual's paths are under /Users/Shared (1777): a user who made Coding first owns both."""
    facts = {**hosts.macos_converged(), **chains(502)}
    with pytest.raises(PyinfraError) as refused:
        plan(facts)
    message = str(refused.value)
    assert "kitty_paths.models_dir (/Users/Shared/Coding/models): /Users/Shared/Coding belongs to uid 502" in message
    assert "kitty_paths.kitty_root (/Users/Shared/Coding/KITT): /Users/Shared/Coding belongs to uid 502" in message
    # /Users/Shared itself (1777, root's) is fine: only Coding is named.
    assert len([line for line in message.splitlines() if line.startswith("  - ")]) == 2


def test_the_admins_folder_under_the_sticky_shared_one_is_fine():
    assert plan({**hosts.macos_converged(), **chains(501)}).ops == []


def test_a_folder_the_admin_left_open_to_others_is_refused():
    with pytest.raises(PyinfraError, match=r"/Users/Shared/Coding is writable by others and not sticky"):
        plan({**hosts.macos_converged(), **chains(501, "drwxrwxrwx")})


# --- the firewall of servers beyond loopback (tasks/system/firewall.py) --------------------------------


def wide_q4(**more) -> dict:
    """q4 beyond loopback on this one host, a LAN's laptops allowed too."""
    servers = copy.deepcopy(hosts.DEFAULTS["kitty_servers"])
    servers["q4"] = {
        **servers["q4"],
        "host": "0.0.0.0",
        "api_key_file": f"{OPT}/keys/q4.key",
        "allow_from": ["192.168.1.0/24"],
        **more,
    }
    return {"kitty_servers": servers}


RULES = [firewall.Rule(8083, "server q4", ("192.168.1.0/24",), local_app=True)]


def firewall_ops(result) -> list[str]:
    return [op.name for op in result.ops if "firewall" in op.name.lower() or "nft" in op.name or "pf " in op.name]


def test_linux_a_server_beyond_loopback_gets_its_nftables_table_and_boot_unit():
    result = plan(hosts.linux_converged(), data=wide_q4())
    mark = firewall.digest(RULES)
    assert firewall_ops(result) == [
        "Refresh the apt index (nftables)",
        "Install nftables",
        "nftables ruleset: server q4 (8083)",
        "Boot unit kitty-firewall.service",
        "Enable kitty-firewall.service (the ruleset at every boot)",
        f"Load the nftables table inet kitty_ops ({mark})",
    ]
    assert result.op(f"Load the nftables table inet kitty_ops ({mark})").commands == [
        "nft -f /etc/kitty-ops/firewall.nft"
    ]
    # Before any server listens there: the firewall's operations come first.
    names = [op.name for op in result.ops]
    assert names.index(f"Load the nftables table inet kitty_ops ({mark})") < min(
        (i for i, name in enumerate(names) if name.startswith("server q4")), default=len(names)
    )


def test_linux_a_converged_firewall_plans_nothing_and_a_stale_one_is_loaded_again():
    facts = {**hosts.linux_converged(), **firewall_facts.converged(RULES, os="linux"), **installed_nftables()}
    assert firewall_ops(plan(facts, data=wide_q4())) == []
    # A client more: the file and the table change, nothing else of the firewall.
    wider = [firewall.Rule(8083, "server q4", ("192.168.1.0/24", "10.9.9.9"), local_app=True)]
    ops = firewall_ops(plan(facts, data=wide_q4(allow_from=["192.168.1.0/24", "10.9.9.9"])))
    assert ops == [
        "nftables ruleset: server q4 (8083)",
        f"Load the nftables table inet kitty_ops ({firewall.digest(wider)})",
    ]


def test_linux_the_firewall_goes_with_the_last_server_beyond_loopback():
    facts = {**hosts.linux_converged(), **firewall_facts.converged(RULES, os="linux")}
    result = plan(facts)
    (name,) = firewall_ops(result)
    assert name == "Remove the nftables table inet kitty_ops (no server beyond loopback here)"
    assert result.op(name).commands == [
        "if [ -f /etc/systemd/system/kitty-firewall.service ]; then systemctl disable kitty-firewall.service; fi",
        "nft delete table inet kitty_ops 2>/dev/null || true",
        "rm -f /etc/kitty-ops/firewall.nft /etc/systemd/system/kitty-firewall.service",
        "systemctl daemon-reload",
    ]


def test_a_host_that_never_had_a_firewall_never_runs_nft():
    result = plan(hosts.linux_converged())
    (state,) = [command for command, _ in result.executed if firewall_facts.state_key("linux") in command]
    assert state.index("nft list") > state.index("then echo file")
    assert firewall_ops(result) == []


def test_macos_a_server_beyond_loopback_gets_a_pf_anchor_and_a_boot_daemon():
    result = plan(hosts.macos_converged(), data=wide_q4())
    mark = firewall.digest(RULES[:1])
    ops = firewall_ops(result)
    assert ops[:2] == ["pf anchor: server q4 (8083)", f"Load the pf anchor com.apple/kitty-ops ({mark})"]
    assert any(name.startswith("firewall at boot: install") for name in ops)
    load = result.op(f"Load the pf anchor com.apple/kitty-ops ({mark})").commands
    assert load == [
        "/sbin/pfctl -a com.apple/kitty-ops -f /etc/pf.anchors/com.kitty-ops",
        "/sbin/pfctl -s info | grep -q 'Status: Enabled' || /sbin/pfctl -E",
    ]
    # Only Apple's anchor point, never /etc/pf.conf.
    assert not any("/etc/pf.conf" in command for command in result.commands)


def test_macos_a_converged_firewall_plans_nothing_and_pf_turned_off_is_turned_on():
    facts = {**hosts.macos_converged(), **firewall_facts.converged(RULES, os="macos")}
    assert firewall_ops(plan(facts, data=wide_q4())) == []
    facts[firewall_facts.state_key("macos")] = ["file", f"loaded {firewall.digest(RULES)}", "status Disabled"]
    assert firewall_ops(plan(facts, data=wide_q4())) == [
        f"Load the pf anchor com.apple/kitty-ops ({firewall.digest(RULES)})"
    ]


def test_macos_the_firewall_goes_with_the_last_server_beyond_loopback():
    facts = {**hosts.macos_converged(), **firewall_facts.converged(RULES, os="macos")}
    ops = firewall_ops(plan(facts))
    assert ops[0] == "Remove the pf anchor com.apple/kitty-ops (no server beyond loopback here)"
    assert any(name.startswith("firewall at boot: stop and remove") for name in ops[1:])


def installed_nftables() -> dict:
    facts = hosts.linux_converged()
    facts["dpkg -l"] = [*facts["dpkg -l"], "ii  nftables  1.0.6-2  amd64  test package"]
    return {"dpkg -l": facts["dpkg -l"]}
