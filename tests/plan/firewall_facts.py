"""Scripted facts of the firewall (tasks/system/firewall.py) for @fake hosts: what a host has once its
ruleset is written, loaded and kept at boot."""

from __future__ import annotations

from tasks import config
from tasks.host import layout
from tasks.system import firewall
from tests.plan import launchd_facts, supervise_facts
from tests.plan.harness import group_data


def state_key(os: str) -> str:
    """A substring of the FirewallState fact's command alone."""
    return f"if [ -f {firewall.PF_FILE if os == 'macos' else firewall.NFT_FILE} ]; then echo file"


def converged(rules: list[firewall.Rule], *, os: str) -> dict:
    """The ruleset of `rules` written, loaded (pf on), and its boot job or unit in place."""
    mark = firewall.digest(rules)
    if os == "macos":
        records = layout.records_dir(config.load(group_data()))
        return {
            state_key(os): ["file", f"loaded {mark}", "status Enabled"],
            **launchd_facts.file(firewall.PF_FILE, firewall.render_pf(rules), user="root", group="wheel"),
            **launchd_facts.directory("/etc/pf.anchors"),
            **supervise_facts.program(firewall.boot_program(), os="macos", records_dir=records, values={}),
        }
    return {
        state_key(os): ["file", f"loaded {mark}", "unit enabled"],
        **launchd_facts.file(firewall.NFT_FILE, firewall.render_nft(rules), user="root", group="root"),
        **launchd_facts.file(firewall.UNIT_FILE, firewall.UNIT_TEXT, user="root", group="root"),
        **launchd_facts.directory("/etc/kitty-ops", group="root"),
        **launchd_facts.directory("/etc/systemd/system", group="root"),
    }
