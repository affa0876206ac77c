"""Prometheus scrape targets of the model servers: one per enabled server with metrics on, written only on change."""

from __future__ import annotations

import copy
import json

import pytest

from tasks import config
from tasks.engine import host_file
from tasks.host import layout
from tasks.inference import llamacpp, metrics, server_args
from tests.plan import hosts, observability_facts
from tests.plan.harness import plan

OP = "Prometheus targets of the model servers"
CFG = config.load(hosts.DEFAULTS)


def with_servers(**changes) -> dict:
    servers = copy.deepcopy(hosts.DEFAULTS["kitty_servers"])
    for name, change in changes.items():
        servers[name].update(change)
    return {**hosts.DEFAULTS, "kitty_servers": servers}


def test_every_enabled_server_is_a_target_labelled_server_model_host():
    found = json.loads(metrics.render(CFG, "studio"))
    assert found == [
        {
            "targets": [f"127.0.0.1:{server.port}"],
            "labels": {"server": name, "model": server.model, "host": "studio"},
        }
        for name, server in sorted(CFG.enabled_servers().items())
    ]
    assert found, "the defaults enable servers"


def test_a_disabled_server_and_one_without_metrics_are_not_targets_and_the_latter_loses_the_flag():
    cfg = config.load(with_servers(q4={"enabled": False}, summary={"metrics": False}))
    names = [entry["labels"]["server"] for entry in metrics.targets(cfg, "studio")]
    assert "q4" not in names and "summary" not in names
    assert names == sorted(n for n, s in cfg.enabled_servers().items() if s.metrics)
    argv = server_args.arguments(cfg, "summary", cfg.servers["summary"], llamacpp.binary(cfg), "/m")
    assert "--metrics" not in argv
    argv = server_args.arguments(CFG, "summary", CFG.servers["summary"], llamacpp.binary(CFG), "/m")
    assert "--metrics" in argv


def test_scrape_host_and_host_label_come_from_group_data():
    data = {**hosts.DEFAULTS, "kitty_metrics": {"scrape_host": "host.docker.internal", "host_label": "kitty-1"}}
    entries = metrics.targets(config.load(data), "studio")
    assert all(e["targets"][0].startswith("host.docker.internal:") for e in entries)
    assert {e["labels"]["host"] for e in entries} == {"kitty-1"}


def test_metrics_in_extra_args_is_refused_naming_the_field():
    data = with_servers(q4={"extra_args": ["--metrics"]})
    with pytest.raises(config.ConfigError, match=r"kitty_servers.q4.extra_args: .*'metrics'"):
        config.load(data)


@pytest.mark.parametrize("os", ["macos", "linux"])
def test_a_converged_host_plans_no_target_change(os):
    facts = hosts.macos_converged() if os == "macos" else hosts.linux_converged()
    names = [op.name for op in plan(facts, groups=("inference",)).ops]
    assert f"Metrics | {OP}" not in names and OP not in names


def test_disabling_a_server_rewrites_the_file_without_it_and_a_fresh_host_gets_it_in_its_folder():
    data = with_servers(summary={"enabled": False})
    ops = {op.name: op for op in plan(hosts.linux_converged(), data=data, groups=("inference",)).ops}
    assert OP in ops, list(ops)
    # Only the content changed: no mkdir, chmod or chown.
    assert [c for c in ops[OP].commands if not c.startswith("FileUploadCommand")] == []
    fresh = {op.name: op for op in plan(hosts.linux(installed=hosts.APT_PACKAGES), groups=("inference",)).ops}
    folder = layout.metrics_targets(CFG).rsplit("/", 1)[0]
    assert fresh[OP].commands[0] == host_file.folder_command(folder, "admin")


def test_the_target_file_is_the_one_the_fake_host_answers_for():
    # Guards the simulated converged hosts: they must describe the file the deploy writes.
    facts = observability_facts.converged(hosts.DEFAULTS, os="linux")
    assert any(layout.metrics_targets(CFG) in key for key in facts)
