"""inventory.py: hosts, roles and, for several inference hosts, kitty_serves and kitty_address from the environment."""

from __future__ import annotations

import runpy

import pytest

from tests.plan.harness import ROOT

VARIABLES = ("KITTY_HOSTS", "KITTY_INFERENCE_HOSTS", "KITTY_APP_HOSTS", "KITTY_HOST_ADDRESSES", "KITTY_SSH_KEY")


def inventory(monkeypatch, tmp_path, **env) -> dict:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KITTY_SSH_KNOWN_HOSTS", str(tmp_path / "known_hosts"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "inventory.py"))


def test_without_variables_this_machine_carries_every_role(monkeypatch, tmp_path):
    found = inventory(monkeypatch, tmp_path)
    assert found["inference"] == ["@local"] and found["application"] == ["@local"]


def test_the_manuals_two_macs_from_the_environment(monkeypatch, tmp_path):
    found = inventory(
        monkeypatch,
        tmp_path,
        KITTY_APP_HOSTS="admin@studio.local",
        KITTY_INFERENCE_HOSTS="admin@studio.local=q4+summary+vision,admin@studio2.local:2222=f16",
        KITTY_HOST_ADDRESSES="studio2.local=192.168.1.20",
    )
    inference = dict(found["inference"])
    assert inference["studio.local"]["kitty_serves"] == ["q4", "summary", "vision"]
    assert "kitty_address" not in inference["studio.local"]
    assert inference["studio2.local"]["kitty_serves"] == ["f16"]
    assert inference["studio2.local"]["kitty_address"] == "192.168.1.20"
    assert inference["studio2.local"]["ssh_port"] == 2222
    assert inference["studio2.local"]["ssh_strict_host_key_checking"] == "yes"
    # The app role of the same host carries no kitty_serves of its own (pyinfra merges a host's data).
    assert "kitty_serves" not in dict(found["application"])["studio.local"]


def test_a_host_without_servers_listed_keeps_todays_data(monkeypatch, tmp_path):
    found = inventory(monkeypatch, tmp_path, KITTY_HOSTS="admin@studio.local")
    assert "kitty_serves" not in dict(found["inference"])["studio.local"]


def test_a_bad_address_item_is_refused(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="KITTY_HOST_ADDRESSES"):
        inventory(monkeypatch, tmp_path, KITTY_HOSTS="admin@studio.local", KITTY_HOST_ADDRESSES="studio.local")
