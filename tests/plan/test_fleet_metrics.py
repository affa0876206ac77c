"""One Prometheus sees every host, planned through deploy.py for the manual's two Macs.

Mac 1 (the app host) writes targets for every server of both Macs, a scrape job per keyed
server and Prometheus's copy of its key (contents never in a command, pyinfra's output at
-vvv --diff included); a server that moves from Mac 2 to Mac 1 leaves Mac 2's address in
Mac 1's targets at the next converge. The content rules are in
tests/unit/test_scrape_targets.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tasks.host import layout
from tasks.inference import api_keys, metrics, scrape_keys
from tests.plan import multihost
from tests.plan.test_placement import (
    MAC1,
    MAC2,
    MAC2_ADDRESS,
    converged_mac,
    firewall_rules,
    inventory,
    placed,
    with_facts,
)

TARGETS = "Prometheus targets of the model servers"
JOBS = "Prometheus scrape jobs of the model servers"
F16_COPY = "Prometheus's copy of server f16's API key (mode 0600, contents never shown)"


@pytest.fixture(autouse=True)
def keys(tmp_path, monkeypatch):
    monkeypatch.setenv("KITTY_KEYS_DIR", str(tmp_path / "keys"))
    return tmp_path / "keys"


def uploaded(plan, name: str) -> str:
    """The content an operation uploads (multihost shows an in-memory upload as `upload DEST:\\nTEXT`)."""
    (command,) = [c for c in plan.op(name).commands if c.startswith("upload ")]
    return command.partition("\n")[2]


def test_a_fresh_app_mac_gets_every_macs_targets_a_job_per_key_and_a_copy_of_the_key_never_shown():
    two = inventory()
    cfgs = placed(two)
    rules = firewall_rules(two, MAC2)
    # Mac 1 converged but for its Prometheus files: as it was before this feature.
    facts = {MAC1: converged_mac(cfgs[MAC1], app=True), MAC2: converged_mac(cfgs[MAC2], app=False, rules=rules)}
    files = (layout.metrics_targets(cfgs[MAC1]), layout.metrics_jobs(cfgs[MAC1]))
    for key in [k for k in facts[MAC1] if any(f in k for f in files)]:
        del facts[MAC1][key]
    facts[MAC1] = {k: v for k, v in facts[MAC1].items() if layout.prometheus_keys_dir(cfgs[MAC1]) not in k}
    plans = multihost.plan_hosts(with_facts(two, facts))
    names = [op.name for op in plans[MAC1].ops]
    assert names == ["Folder of Prometheus's copies of the servers' keys", F16_COPY, TARGETS, JOBS], names
    targets = {e["labels"]["server"]: e for e in json.loads(uploaded(plans[MAC1], TARGETS))}
    assert targets["f16"]["targets"] == [f"{MAC2_ADDRESS}:8082"]
    assert targets["f16"]["labels"]["__kitty_job"] == "kitty-llama-f16"
    assert set(targets) == {"q4", "summary", "vision", "f16"}
    jobs = uploaded(plans[MAC1], JOBS)
    assert f'credentials_file: "{scrape_keys.key_path(cfgs[MAC1], "f16")}"' in jobs
    # The copy: written by the secret-file operation, the key on its stdin, never in a command.
    key = api_keys.controller_key("f16")
    assert not any(key in c for op in plans[MAC1].ops for c in op.commands)
    assert "umask 077" in plans[MAC1].op(F16_COPY).commands[0]
    # Mac 2 has no app: nothing of Mac 1's targets, its own as before.
    assert [op.name for op in plans[MAC2].ops] == []


def test_a_server_moved_from_mac2_to_mac1_leaves_mac2s_address_in_the_targets():
    before = inventory({"studio.local": ["q4", "vision"], "studio2.local": ["f16", "summary"]})
    cfgs = placed(before)
    rules = firewall_rules(before, MAC2)
    facts = {MAC1: converged_mac(cfgs[MAC1], app=True), MAC2: converged_mac(cfgs[MAC2], app=False, rules=rules)}
    was = {e["labels"]["server"]: e["targets"] for e in json.loads(metrics.render(cfgs[MAC1], "studio"))}
    assert was["summary"] == [f"{MAC2_ADDRESS}:8085"]
    plans = multihost.plan_hosts(with_facts(inventory(), facts))
    now = {e["labels"]["server"]: e for e in json.loads(uploaded(plans[MAC1], TARGETS))}
    assert now["summary"]["targets"] == ["127.0.0.1:8085"] and "__kitty_job" not in now["summary"]["labels"]
    assert now["f16"]["targets"] == [f"{MAC2_ADDRESS}:8082"]
    assert "kitty-llama-summary" not in uploaded(plans[MAC1], JOBS)


def test_the_cli_at_vvv_with_diff_never_shows_the_key_of_prometheus_copy(keys):
    result = subprocess.run(
        [sys.executable, "-m", "pyinfra", "tests/plan/simulated_two_macs.py", "deploy.py", "--dry", "-vvv", "--diff"],
        cwd=multihost.ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "KITTY_KEYS_DIR": str(keys)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "Prometheus's copy of server f16's API key" in output
    assert api_keys.controller_key("f16") not in output
