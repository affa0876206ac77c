"""Placement's details the rules in test_placement.py leave open, found by mutation (benchmarks/mutation.py).

Each test pins something an operator or a deploy file reads: the whole site a
server gets, an address as it goes in a URL, every line of an error, what a
host's config says when it is seen in one role only.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tasks import config
from tasks.config import ConfigError
from tasks.config.placement import Site, compute, default_address, host_config, local_config, url_host, views_of
from tests.unit.data import host_data
from tests.unit.test_placement import APP, BOTH, CFG, INF, MANUAL, refused, two_macs, view


def test_an_inventory_name_is_its_address_without_the_user():
    assert default_address("admin@studio.local") == "studio.local"
    assert default_address("studio.local") == "studio.local"
    assert default_address("@local") is None


def test_an_ipv6_address_goes_into_a_url_in_brackets_once():
    assert url_host("::1") == "[::1]"
    assert url_host("[::1]") == "[::1]"
    assert url_host("192.168.1.20") == "192.168.1.20"


def test_a_server_nobody_runs_has_no_hosts():
    assert compute(two_macs(studio2="192.168.1.20")).hosts_of("nonexistent") == ()


def test_each_host_is_its_own_site_with_its_servers_own_bind_port_and_key():
    data = host_data()
    data["kitty_servers"]["q4"]["api_key_file"] = "/etc/kitty/q4.key"
    placement = compute([view("@local", BOTH, cfg=config.load(data))])
    assert placement.sites["q4"] == (Site("q4", "@local", "127.0.0.1", 8083, "/etc/kitty/q4.key"),)
    assert placement.sites["f16"] == (Site("f16", "@local", "127.0.0.1", 8082, None),)
    assert placement.addresses == {"@local": None}


def test_a_remote_server_binds_to_its_hosts_address_with_a_derived_key():
    placement = compute(two_macs(studio2="192.168.1.20"))
    assert placement.served_on("studio2.local") == {
        "f16": Site("f16", "studio2.local", "192.168.1.20", 8082, "/opt/kitty/keys/f16.key")
    }


def test_the_derived_key_file_does_not_double_a_trailing_slash():
    cfg = config.load(host_data(kitty_paths__opt_dir="/opt/kitty/"))
    views = [view("studio.local", BOTH, MANUAL["studio.local"], cfg=cfg), view("studio2.local", INF, ["f16"], cfg=cfg)]
    assert compute(views).served_on("studio2.local")["f16"].key_file == "/opt/kitty/keys/f16.key"


def test_an_inference_host_listed_after_an_app_only_host_is_placed():
    placement = compute([view("studio.local", APP), view("studio2.local", INF)])
    assert set(placement.served_on("studio2.local")) == set(CFG.enabled_servers())


def test_errors_of_self_contained_hosts_are_listed_under_one_heading():
    message = refused([view("studio.local", BOTH, address="a b")])
    assert message.startswith("invalid placement of the model servers:\n  - studio.local: kitty_address: ")


def test_an_unknown_server_is_refused_naming_the_known_ones():
    message = refused([view("studio.local", BOTH, ["q4", "summary", "vision", "f61"]), view("b", INF, ["f16"])])
    assert "studio.local: kitty_serves: unknown server 'f61' (kitty_servers has: q4, f16, summary, vision)" in message


def test_a_server_named_by_a_host_without_any_server_is_refused_saying_there_are_none():
    data = host_data()
    data["kitty_servers"] = {}
    message = refused([view("studio.local", BOTH, ["q4"], cfg=config.load(data))])
    assert "studio.local: kitty_serves: unknown server 'q4' (kitty_servers has: none)" in message


def test_every_error_is_listed_whole_one_per_line():
    """A server no inference host runs, one on two hosts: the message as the operator reads it."""
    views = [
        view("app", APP),
        view("inf", INF, ["q4", "summary"]),
        view("inf2", INF, ["q4", "vision"]),
    ]
    assert refused(views) == (
        "invalid placement of the model servers:\n"
        "  - kitty_servers.f16: enabled (on app, inf, inf2) but no inference host runs it: "
        "add it to kitty_serves of one of inf, inf2, or set enabled: false\n"
        "  - kitty_servers.q4: runs on inf, inf2 (their kitty_serves, or none set: every enabled server): "
        "list it in the kitty_serves of one host, or set replicas: true on it"
    )


def test_errors_of_self_contained_hosts_are_one_per_line():
    message = refused([view("a", BOTH, address="a b"), view("b", BOTH, address="c d")])
    assert message.count("\n  - ") == 2 and "\n  - b: kitty_address: " in message


def test_a_server_two_remote_app_hosts_use_names_both():
    views = [view("@local", INF, ["f16"]), view("studio.local", BOTH, MANUAL["studio.local"]), view("c", APP)]
    assert "app host studio.local, c uses it" in refused(views)


def test_a_remote_server_on_a_host_without_an_address_is_refused_with_the_whole_remedy():
    message = refused([view("@local", INF, ["f16"]), view("studio.local", BOTH, MANUAL["studio.local"])])
    assert (
        "@local: kitty_address: server 'f16' runs here and app host studio.local uses it, "
        "but @local has no address other hosts reach: set kitty_address"
    ) in message


def test_the_app_is_wired_to_every_server_it_enables_whatever_the_order():
    app = host_data()
    app["kitty_servers"]["q4"]["enabled"] = False
    placement = compute([view("studio.local", APP, cfg=config.load(app)), view("studio2.local", INF)])
    assert set(placement.wiring["studio.local"]) == {"f16", "summary", "vision"}


def test_a_server_on_the_apps_own_host_bound_to_every_address_is_reached_through_model_host():
    data = host_data()
    data["kitty_servers"]["summary"].update(host="0.0.0.0", api_key_file="/etc/kitty/summary.key")
    cfg = config.load(data)
    views = [view("studio.local", BOTH, MANUAL["studio.local"], cfg=cfg), view("studio2.local", INF, ["f16"], cfg=cfg)]
    wire = compute(views).wiring["studio.local"]["summary"]
    assert (wire.url, wire.keyed) == ("http://host.docker.internal:8085", True)


# --- A host's config as its deploy file sees it --------------------------------------------


def test_an_app_only_host_gets_its_wiring_and_nothing_else():
    placement = compute([view("studio.local", APP), view("studio2.local", INF)])
    placed = local_config(CFG, placement, "studio.local", APP)
    assert placed.wiring == placement.wiring["studio.local"] and placed.servers == CFG.servers


def test_an_app_host_seen_in_its_inference_role_only_gets_no_wiring():
    """stop.py --data role=inference narrows the groups a host is seen with."""
    placement = compute(two_macs(studio2="192.168.1.20"))
    assert local_config(CFG, placement, "studio.local", INF).wiring is None


def test_a_server_this_host_disables_is_not_said_to_run_elsewhere():
    mine = host_data()
    mine["kitty_servers"]["f16"]["enabled"] = False
    views = [view("studio.local", BOTH, MANUAL["studio.local"], cfg=config.load(mine)), view("b", INF, ["f16"])]
    placed = local_config(config.load(mine), compute(views), "studio.local", BOTH)
    assert "f16" not in placed.elsewhere and not placed.servers["f16"].enabled


class Inventory:
    """What placement reads of pyinfra's inventory: its hosts, iterable; weakly referenced by the cache."""

    def __init__(self, *hosts):
        self.hosts = hosts

    def __iter__(self):
        return iter(self.hosts)


def inventory_host(name: str, groups: tuple[str, ...], data: dict) -> SimpleNamespace:
    return SimpleNamespace(name=name, groups=groups, data=data, inventory=None)


def test_host_config_is_the_given_hosts_placed_config_outside_any_deploy():
    studio = inventory_host("studio.local", BOTH, {**host_data(), "kitty_serves": MANUAL["studio.local"]})
    studio2 = inventory_host("studio2.local", INF, {**host_data(), "kitty_serves": ["f16"]})
    studio.inventory = studio2.inventory = Inventory(studio, studio2)
    assert set(host_config(studio2).enabled_servers()) == {"f16"}
    assert set(host_config(studio).enabled_servers()) == {"q4", "summary", "vision"}


def test_an_invalid_hosts_config_is_refused_naming_the_host():
    bad = host_data()
    bad["kitty_servers"]["q4"]["port"] = "not a port"
    with pytest.raises(ConfigError, match=r"^studio2\.local: "):
        views_of([inventory_host("studio.local", BOTH, host_data()), inventory_host("studio2.local", INF, bad)])
