"""One Prometheus sees every host: the app host's targets and scrape jobs from the placement.

Pure (tasks/config/scrape_targets.py, tasks/inference/metrics.py): the placement of tests/unit/test_placement.py,
the manual's two Macs, rendered as the deploy renders the files. The plan tests
(tests/plan/test_fleet_metrics.py) run the same through deploy.py; tests/e2e/test_two_hosts.py
has a real Prometheus scrape across two sandboxes.
"""

from __future__ import annotations

import json

import pytest

from tasks import config
from tasks.config.placement import compute, local_config
from tasks.inference import metrics, scrape_keys
from tests.unit.data import host_data
from tests.unit.test_placement import APP, BOTH, CFG, INF, MANUAL, view

MAC1, MAC2 = "studio.local", "studio2.local"
MAC2_ADDRESS = "192.168.1.20"


@pytest.fixture(autouse=True)
def keys(tmp_path, monkeypatch):
    monkeypatch.setenv("KITTY_KEYS_DIR", str(tmp_path / "keys"))
    return tmp_path / "keys"


def placed(serves: dict[str, list[str]], groups=None, cfgs=None) -> dict[str, config.KittyConfig]:
    groups = groups or {MAC1: BOTH, MAC2: INF}
    cfgs = cfgs or {}
    addresses = {MAC1: "192.168.1.10", MAC2: MAC2_ADDRESS}
    views = [view(name, groups[name], serves[name], addresses[name], cfgs.get(name, CFG)) for name in serves]
    where = compute(views)
    return {v.name: local_config(v.cfg, where, v.name, v.groups) for v in views}


def entries(cfg: config.KittyConfig) -> dict[str, list[dict]]:
    """{server: [its file_sd entries]} of the targets file as rendered, node name `studio`."""
    found: dict[str, list[dict]] = {}
    for entry in json.loads(metrics.render(cfg, "studio")):
        found.setdefault(entry["labels"]["server"], []).append(entry)
    return found


def test_the_app_hosts_targets_list_every_server_of_every_host_at_the_address_its_env_uses():
    app = placed(MANUAL)[MAC1]
    found = entries(app)
    assert set(found) == set(CFG.enabled_servers())
    # Mac 2's f16, at the address the .env gives the brain; labelled with Mac 2's name, keyed.
    assert found["f16"] == [
        {
            "targets": [f"{MAC2_ADDRESS}:8082"],
            "labels": {
                "server": "f16",
                "model": CFG.servers["f16"].model,
                "host": MAC2,
                "__kitty_job": "kitty-llama-f16",
            },
        }
    ]
    assert app.wiring["f16"].url == f"http://{found['f16'][0]['targets'][0]}"
    # Its own servers on its loopback, labelled with its node name, without a key: as before.
    for name in ("q4", "summary", "vision"):
        assert found[name] == [
            {
                "targets": [f"127.0.0.1:{CFG.servers[name].port}"],
                "labels": {"server": name, "model": CFG.servers[name].model, "host": "studio"},
            }
        ]


def test_a_keyed_server_gets_a_job_sending_a_copy_of_its_key_and_the_key_is_in_no_file(keys):
    from tasks.inference import api_keys

    app = placed(MANUAL)[MAC1]
    assert metrics.jobs(app) == [
        {"name": "kitty-llama", "credentials_file": None},
        {"name": "kitty-llama-f16", "credentials_file": "/opt/kitty/prometheus-keys/f16.key"},
    ]
    assert scrape_keys.key_path(app, "f16") == "/opt/kitty/prometheus-keys/f16.key"
    jobs = metrics.render_jobs(app)
    assert 'credentials_file: "/opt/kitty/prometheus-keys/f16.key"' in jobs
    assert 'regex: "kitty-llama-f16"' in jobs and 'regex: ""' in jobs
    key = api_keys.controller_key("f16")
    assert key not in jobs and key not in metrics.render(app, "studio")


def test_keys_dir_and_prometheus_user_come_from_group_data():
    data = {**host_data(), "kitty_metrics": {"keys_dir": "/srv/prom/keys", "prometheus_user": "nobody"}}
    app = placed(MANUAL, cfgs={MAC1: config.load(data)})[MAC1]
    assert metrics.jobs(app)[1]["credentials_file"] == "/srv/prom/keys/f16.key"
    assert app.metrics.prometheus_user == "nobody"
    with pytest.raises(config.ConfigError, match=r"kitty_metrics.keys_dir"):
        config.load({**host_data(), "kitty_metrics": {"keys_dir": "relative/keys"}})
    with pytest.raises(config.ConfigError, match=r"kitty_metrics.prometheus_user"):
        config.load({**host_data(), "kitty_metrics": {"prometheus_user": "no body"}})


def test_a_moved_server_leaves_the_targets_and_its_job_at_the_next_converge():
    before = placed(MANUAL)[MAC1]
    after = placed({MAC1: ["q4", "summary", "vision", "f16"], MAC2: []})[MAC1]
    assert entries(after)["f16"] == [
        {
            "targets": ["127.0.0.1:8082"],
            "labels": {"server": "f16", "model": CFG.servers["f16"].model, "host": "studio"},
        }
    ]
    assert MAC2_ADDRESS not in metrics.render(after, "studio") and MAC2_ADDRESS in metrics.render(before, "studio")
    assert [job["name"] for job in metrics.jobs(after)] == ["kitty-llama"]
    # And the way back: from Mac 1's loopback to Mac 2's address, with its job again.
    assert entries(placed(MANUAL)[MAC1]) == entries(before)


def test_a_removed_server_leaves_the_app_hosts_targets():
    servers = {**host_data()["kitty_servers"]}
    servers["f16"] = {**servers["f16"], "enabled": False}
    without = config.load({**host_data(), "kitty_servers": servers})
    app = placed({MAC1: MANUAL[MAC1], MAC2: []}, cfgs={MAC1: without, MAC2: without})[MAC1]
    assert "f16" not in entries(app)
    assert [job["name"] for job in metrics.jobs(app)] == ["kitty-llama"]


def test_an_app_host_that_runs_no_server_gets_every_hosts_targets():
    both = placed({MAC1: None, MAC2: ["q4", "summary", "vision", "f16"]}, groups={MAC1: APP, MAC2: INF})
    found = entries(both[MAC1])
    assert set(found) == set(CFG.enabled_servers())
    assert all(e["targets"][0].startswith(f"{MAC2_ADDRESS}:") for es in found.values() for e in es)
    assert all(e["labels"]["host"] == MAC2 for es in found.values() for e in es)
    # Mac 2, no app host: its own servers, as before (each behind its key: they listen beyond loopback).
    assert set(entries(both[MAC2])) == set(CFG.enabled_servers())


def test_a_replica_is_a_target_on_each_of_its_hosts():
    servers = {**host_data()["kitty_servers"]}
    servers["summary"] = {**servers["summary"], "replicas": True}
    cfg = config.load({**host_data(), "kitty_servers": servers})
    app = placed({MAC1: ["q4", "summary", "vision"], MAC2: ["f16", "summary"]}, cfgs={MAC1: cfg, MAC2: cfg})[MAC1]
    assert [e["targets"][0] for e in entries(app)["summary"]] == ["127.0.0.1:8085", f"{MAC2_ADDRESS}:8085"]
    assert [e["labels"]["host"] for e in entries(app)["summary"]] == ["studio", MAC2]


def test_a_server_on_another_hosts_loopback_is_no_target_nobody_here_reaches_it():
    # Mac 2 runs `summary` for nobody: the app host's config has it disabled, so it stays on loopback there.
    servers = {**host_data()["kitty_servers"]}
    servers["summary"] = {**servers["summary"], "enabled": False}
    app_cfg = config.load({**host_data(), "kitty_servers": servers})
    both = placed({MAC1: ["q4", "vision"], MAC2: ["f16", "summary"]}, cfgs={MAC1: app_cfg})
    assert both[MAC2].servers["summary"].host == "127.0.0.1"
    assert "summary" not in entries(both[MAC1])


def test_hosts_of_their_own_keep_their_own_targets():
    placement = compute([view("a", BOTH), view("b", BOTH)])
    assert local_config(CFG, placement, "a", BOTH).scrape is None
    assert set(entries(CFG)) == {n for n, s in CFG.enabled_servers().items() if s.metrics}
