"""Placement of the model servers over the inventory's hosts (tasks/config/placement.py): every rule, every error.

Pure: HostView is what tasks/placement.views_of reads from pyinfra's inventory.
The plan tests (tests/plan/test_placement.py) run the same through deploy.py.
"""

from __future__ import annotations

import pytest

from tasks import config
from tasks.app import secrets
from tasks.config import ConfigError
from tasks.config.placement import HostView, compute, local_config
from tasks.inference import api_keys
from tasks.system import memory_budget
from tests.unit.data import host_data

CFG = config.load(host_data())
BOTH = ("inference", "application")
INF = ("inference",)
APP = ("application",)
MANUAL = {"studio.local": ["q4", "summary", "vision"], "studio2.local": ["f16"]}


def view(name, groups=INF, serves=None, address=None, cfg=CFG) -> HostView:
    return HostView(name=name, groups=groups, cfg=cfg, serves=serves, address=address)


def two_macs(**addresses) -> list[HostView]:
    return [
        view("studio.local", BOTH, MANUAL["studio.local"], addresses.get("studio")),
        view("studio2.local", INF, MANUAL["studio2.local"], addresses.get("studio2")),
    ]


def refused(views) -> str:
    with pytest.raises(ConfigError) as raised:
        compute(views)
    return str(raised.value)


# --- The single host, and several self-contained hosts, as before --------------------------


def test_one_host_with_every_role_is_placed_as_before():
    placement = compute([view("@local", BOTH)])
    assert set(placement.served_on("@local")) == set(CFG.enabled_servers())
    assert all(site.bind == "127.0.0.1" and site.key_file is None for site in placement.served_on("@local").values())
    placed = local_config(CFG, placement, "@local", BOTH)
    # Unchanged config: the same servers, the same .env (no wiring: model_host URLs).
    assert placed == CFG


def test_hosts_each_with_every_role_are_each_their_own_kitty_host():
    placement = compute([view("a", BOTH), view("b", BOTH)])
    assert placement.hosts_of("q4") == ("a", "b")
    assert local_config(CFG, placement, "b", BOTH) == CFG


def test_an_inventory_without_inference_hosts_keeps_model_host_urls():
    placement = compute([view("app", APP)])
    placed = local_config(CFG, placement, "app", APP)
    assert placed.wiring is None
    assert secrets.env_values(placed)["LLAMACPP_Q4_HOST"] == "http://host.docker.internal:8083"


# --- The manual's two Macs ---------------------------------------------------------------


def test_the_manuals_two_macs_each_run_only_their_servers():
    placement = compute(two_macs(studio2="192.168.1.20"))
    mac1 = local_config(CFG, placement, "studio.local", BOTH)
    mac2 = local_config(CFG, placement, "studio2.local", INF)
    assert set(mac1.enabled_servers()) == {"q4", "summary", "vision"}
    assert set(mac2.enabled_servers()) == {"f16"}
    # Only the app host elsewhere reaches f16: it binds to Mac 2's address, with a derived key.
    f16 = mac2.servers["f16"]
    assert f16.host == "192.168.1.20"
    assert f16.api_key_file == f"{CFG.paths.opt_dir}/keys/f16.key"
    # Mac 1's servers serve Mac 1's app only: loopback, no key, as today.
    assert {s.host for s in mac1.enabled_servers().values()} == {"127.0.0.1"}
    assert all(s.api_key_file is None for s in mac1.enabled_servers().values())


def test_the_app_hosts_env_points_at_the_host_that_runs_each_server(tmp_path):
    placement = compute(two_macs(studio2="192.168.1.20"))
    mac1 = local_config(CFG, placement, "studio.local", BOTH)
    values = secrets.env_values(mac1)
    assert values["LLAMACPP_F16_HOST"] == "http://192.168.1.20:8082"
    assert values["LLAMACPP_Q4_HOST"] == "http://host.docker.internal:8083"
    assert values["LLAMACPP_SUMMARY_HOST"] == "http://host.docker.internal:8085"
    # The key of the remote server only, made once on the controller.
    keys = api_keys.env_secrets(mac1, tmp_path)
    assert list(keys) == ["LLAMACPP_F16_API_KEY"]
    assert keys["LLAMACPP_F16_API_KEY"] == (tmp_path / "f16.key").read_text().strip()
    # An inference-only host writes no .env: it carries no wiring.
    assert local_config(CFG, placement, "studio2.local", INF).wiring is None


def test_without_kitty_address_a_host_is_reached_at_its_inventory_name():
    placement = compute(two_macs())
    assert placement.served_on("studio2.local")["f16"].bind == "studio2.local"
    assert placement.wiring["studio.local"]["f16"].url == "http://studio2.local:8082"


def test_an_ipv6_address_is_bracketed_in_the_url():
    placement = compute(two_macs(studio2="fd00::20"))
    assert placement.served_on("studio2.local")["f16"].bind == "fd00::20"
    assert placement.wiring["studio.local"]["f16"].url == "http://[fd00::20]:8082"


def test_an_explicit_wildcard_host_is_kept_and_reached_at_the_address():
    data = host_data()
    data["kitty_servers"]["f16"].update(host="0.0.0.0", api_key_file="/etc/kitty/f16.key")
    cfg = config.load(data)
    views = [view("studio.local", BOTH, MANUAL["studio.local"], cfg=cfg), view("studio2.local", INF, ["f16"], cfg=cfg)]
    placement = compute(views)
    site = placement.served_on("studio2.local")["f16"]
    assert (site.bind, site.key_file) == ("0.0.0.0", "/etc/kitty/f16.key")
    assert placement.wiring["studio.local"]["f16"].url == "http://studio2.local:8082"


def test_a_server_on_an_inference_only_host_with_the_app_elsewhere_is_placed_without_kitty_serves():
    placement = compute([view("studio2.local", INF), view("studio.local", APP)])
    assert set(placement.served_on("studio2.local")) == set(CFG.enabled_servers())
    assert placement.wiring["studio.local"]["q4"].url == "http://studio2.local:8083"
    assert all(wire.keyed for wire in placement.wiring["studio.local"].values())


def test_replicas_run_on_several_hosts_and_the_app_prefers_its_own():
    data = host_data()
    data["kitty_servers"]["summary"]["replicas"] = True
    cfg = config.load(data)
    views = [
        view("studio.local", BOTH, ["q4", "summary", "vision"], cfg=cfg),
        view("studio2.local", INF, ["f16", "summary"], cfg=cfg),
    ]
    placement = compute(views)
    assert placement.hosts_of("summary") == ("studio.local", "studio2.local")
    assert placement.wiring["studio.local"]["summary"].url == "http://host.docker.internal:8085"


def test_the_memory_budget_counts_only_the_servers_placed_on_each_mac():
    placement = compute(two_macs(studio2="192.168.1.20"))
    mac_memory = 192 * memory_budget.GIB
    mac1 = memory_budget.budget(local_config(CFG, placement, "studio.local", BOTH), mac_memory)
    mac2 = memory_budget.budget(local_config(CFG, placement, "studio2.local", INF), mac_memory)
    assert mac1.fits and {n.server for n in mac1.needs} == {"q4", "summary", "vision"}
    assert mac2.fits and {n.server for n in mac2.needs} == {"f16"}
    # All four on one 192 GB Mac do not fit: the reason for the second Mac.
    assert not memory_budget.budget(CFG, mac_memory).fits


# --- Every error names the host and the field ----------------------------------------------


def test_an_unknown_server_in_kitty_serves_is_refused():
    message = refused([view("studio.local", BOTH, ["q4", "summary", "vision", "f61"]), view("b", INF, ["f16"])])
    assert "studio.local: kitty_serves: unknown server 'f61'" in message


def test_a_disabled_server_in_kitty_serves_is_refused():
    data = host_data()
    data["kitty_servers"]["f16"]["enabled"] = False
    cfg = config.load(data)
    message = refused([view("studio.local", BOTH, MANUAL["studio.local"], cfg=cfg), view("b", INF, ["f16"], cfg=cfg)])
    assert "b: kitty_serves: server 'f16' is disabled (kitty_servers.f16.enabled)" in message


def test_kitty_serves_must_be_a_list_of_names():
    message = refused([view("studio.local", BOTH, "q4,f16")])
    assert "studio.local: kitty_serves: must be a list of server names" in message


def test_a_server_listed_twice_on_one_host_is_refused():
    message = refused([view("studio.local", BOTH, ["q4", "q4", "f16", "summary", "vision"])])
    assert "studio.local: kitty_serves: server 'q4' is listed twice" in message


def test_kitty_serves_outside_the_inference_group_is_refused():
    message = refused([view("studio.local", APP, ["q4"]), view("b", INF)])
    assert "studio.local: kitty_serves: set on a host outside the inference group" in message


def test_an_enabled_server_that_no_host_runs_is_refused():
    message = refused([view("studio.local", BOTH, ["q4", "summary", "vision"])])
    assert "kitty_servers.f16: enabled (on studio.local) but no inference host runs it" in message


def test_a_server_on_two_hosts_without_replicas_is_refused_naming_both():
    message = refused([view("studio.local", BOTH, ["q4", "summary", "vision", "f16"]), view("b", INF, ["f16"])])
    assert "kitty_servers.f16: runs on studio.local, b" in message and "replicas: true" in message


def test_a_remote_server_on_a_host_without_an_address_is_refused():
    message = refused([view("@local", INF, ["f16"]), view("studio.local", BOTH, MANUAL["studio.local"])])
    assert "@local: kitty_address: server 'f16' runs here and app host studio.local uses it" in message


@pytest.mark.parametrize("address", ["0.0.0.0", "a b", "studio;reboot", 5])
def test_a_bad_kitty_address_is_refused(address):
    views = two_macs()
    views[1] = view("studio2.local", INF, ["f16"], address)
    assert f"studio2.local: kitty_address: {address!r}" in refused(views)


def test_every_problem_is_reported_at_once():
    message = refused([view("studio.local", BOTH, ["q4", "nope"]), view("b", INF, ["q4"], "0.0.0.0")])
    assert "unknown server 'nope'" in message
    assert "b: kitty_address" in message
    assert "kitty_servers.q4: runs on studio.local, b" in message
    assert "kitty_servers.f16: enabled" in message


def test_a_key_is_derived_for_every_server_bound_beyond_loopback():
    placement = compute([view("studio2.local", INF), view("studio.local", APP)])
    for name, site in placement.served_on("studio2.local").items():
        assert site.key_file == f"{CFG.paths.opt_dir}/keys/{name}.key"


def test_placement_host_data_is_not_refused_by_load():
    data = host_data()
    data.update(kitty_serves=["q4"], kitty_address="10.0.0.2")
    config.load(data)
    data["kitty_servs"] = ["q4"]
    with pytest.raises(ConfigError, match="kitty_servs: unknown setting"):
        config.load(data)
