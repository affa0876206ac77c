"""Two Macs from one inventory (inventories/two-macs.py), planned together on simulated hosts.

As `pyinfra inventories/two-macs.py deploy.py --dry` would, with @fake hosts answering
the facts (tests/plan/multihost.py): each Mac gets only its servers, the app host's .env
points at the Mac that runs each one, the memory budget passes for both with the default
group_data, a bad placement fails before any operation naming host and field, and moving
a server from Mac 2 to Mac 1 plans exactly: Mac 2 removes it, Mac 1 fetches its model and
installs it, the .env changes, and compose is asked to bring the stack in line (compose
then recreates only the services whose configuration reads the changed variable).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from tasks import config
from tasks.app import secrets
from tasks.config import ConfigError, placement
from tasks.host import layout
from tasks.inference import api_keys, metrics, scrape_keys
from tasks.system import firewall, logs, memory_budget
from tests.plan import (
    firewall_facts,
    hosts,
    inference_facts,
    launchd_facts,
    llamacpp_facts,
    multihost,
    observability_facts,
    stack_facts,
)
from tests.plan.harness import simulated_platform

MAC1, MAC2 = "@fake/studio.local", "@fake/studio2.local"
MAC2_ADDRESS = "192.168.1.20"
MAC = simulated_platform("macos", "admin", "arm64")
MEMORY_GIB = 192


@pytest.fixture(autouse=True)
def keys(tmp_path, monkeypatch):
    """The servers' keys are made on the controller: here, in a folder of this test's own."""
    monkeypatch.setenv("KITTY_KEYS_DIR", str(tmp_path / "keys"))
    return tmp_path / "keys"


def inventory(serves: dict[str, list[str]] | None = None) -> dict[str, tuple[dict, tuple[str, ...]]]:
    """inventories/two-macs.py with @fake names (no SSH), optionally other kitty_serves."""
    found = {}
    for name, (data, groups) in multihost.inventory_file("inventories/two-macs.py").items():
        kept = {key: value for key, value in data.items() if not key.startswith("ssh_")}
        if serves is not None:
            kept["kitty_serves"] = serves[name]
        found[f"@fake/{name}"] = (kept, groups)
    return found


def with_facts(hosts_: dict, facts: dict[str, dict]) -> dict:
    return {name: ({**data, "fake_responses": facts[name]}, groups) for name, (data, groups) in hosts_.items()}


def placed(hosts_: dict) -> dict[str, config.KittyConfig]:
    """Each host's config as the deploy places it, computed here the way deploy.py does."""
    views = [
        placement.HostView(
            name, groups, config.load(hosts.DEFAULTS), data.get("kitty_serves"), data.get("kitty_address")
        )
        for name, (data, groups) in hosts_.items()
    ]
    where = placement.compute(views)
    return {view.name: placement.local_config(view.cfg, where, view.name, view.groups) for view in views}


def bootstrapped_mac() -> dict:
    return hosts.macos(installed=hosts.BREW_PACKAGES, memory_gib=MEMORY_GIB)


def firewall_rules(hosts_: dict, name: str) -> list[firewall.Rule]:
    """The firewall of host `name` as this placement wants it (tasks/system/firewall.py)."""
    views = {
        host: placement.HostView(
            host, groups, config.load(hosts.DEFAULTS), data.get("kitty_serves"), data.get("kitty_address")
        )
        for host, (data, groups) in hosts_.items()
    }
    return firewall.rules_for(name, views, placement.compute(views.values()))


def converged_mac(cfg: config.KittyConfig, *, app: bool, rules: list[firewall.Rule] = ()) -> dict:
    """A Mac converged for `cfg` (a placed config): its servers running, its files as rendered,
    and `rules`, the firewall of its servers beyond loopback, in place."""
    facts = {
        **(firewall_facts.converged(list(rules), os="macos") if rules else {}),
        **llamacpp_facts.converged(hosts.DEFAULTS, os="macos", user="admin", arch="arm64"),
        **inference_facts.model_files(cfg),
        **inference_facts.listening(cfg, os="macos"),
        **inference_facts.supervised_servers(cfg, MAC, "macos"),
        **inference_facts.wait_script(cfg),
        **observability_facts.file_state(logs.config_path(MAC), logs.render(cfg, MAC)),
        **observability_facts.metrics_files(cfg, "admin"),
    }
    for name, srv in cfg.enabled_servers().items():
        if srv.api_key_file:
            facts.update(key_file(srv.api_key_file, name))
    # Prometheus's copies of the keys it scrapes with (tasks/inference/scrape_keys.py), and their listing.
    copies = [scrape_keys.key_path(cfg, t.server) for t in metrics.scraped(cfg) if t.keyed]
    for path in copies:
        facts.update(key_file(path, path.rpartition("/")[2].removesuffix(".key")))
    facts[f"find {layout.prometheus_keys_dir(cfg)} -type f"] = "\n".join(copies)
    if app:
        facts.update(stack_facts.converged(hosts.DEFAULTS, os="macos", user="admin", arch="arm64"))
        # The .env as this placement renders it (the defaults' one would name every server locally).
        facts.update(stack_facts.env_file(cfg, "admin", content=env_text(cfg)))
    return {**facts, **bootstrapped_mac()}


def key_file(path: str, name: str) -> dict:
    content = api_keys.controller_key(name) + "\n"
    return {
        f"sha256sum {path} ": f"{hashlib.sha256(content.encode()).hexdigest()}  {path}",
        **launchd_facts.file(path, content, user="admin", group="staff", mode="rw-------"),
        # The key's folder: 0700, the servers' account's (tasks/inference/api_keys.py).
        f"test -L {path.rpartition('/')[0]} )": (
            f"user=admin group=staff mode=drwx------ atime=0 mtime=0 ctime=0 size=64 '{path.rpartition('/')[0]}'"
        ),
    }


def server_ops(plan) -> dict[str, str]:
    """{"q4": "install (new)", ...}: each model server's supervisor operation that changes something."""
    found = {}
    for op in plan.ops:
        if op.name.startswith("server ") and ": " in op.name:
            name, _, what = op.name.removeprefix("server ").partition(": ")
            found[name] = what
    return found


def env_text(cfg: config.KittyConfig) -> str:
    """The .env as tasks/secrets.env_file writes it: the operator's secrets and the servers' keys."""
    values = {**secrets.secret_values(cfg.stack, multihost.ROOT), **api_keys.env_secrets(cfg)}
    return secrets.render_env(cfg, values)


def env_lines(cfg: config.KittyConfig) -> dict[str, str]:
    text = env_text(cfg)
    return dict(line.split("=", 1) for line in text.splitlines() if line.startswith("LLAMACPP_"))


# --- Two fresh Macs -----------------------------------------------------------------------


def test_each_mac_gets_only_its_servers_and_mac2s_listens_on_its_address_with_a_key():
    two = inventory()
    plans = multihost.plan_hosts(with_facts(two, {MAC1: bootstrapped_mac(), MAC2: bootstrapped_mac()}))
    assert server_ops(plans[MAC1]) == dict.fromkeys(["q4", "summary", "vision"], "install (new)")
    assert server_ops(plans[MAC2]) == {"f16": "install (new)"}
    names = {host: [op.name for op in plan.ops] for host, plan in plans.items()}
    # Only Mac 2's server has a key; only Mac 1 runs the stack.
    assert "API key of server f16 (mode 0600, contents never shown)" in names[MAC2]
    assert not any(name.startswith("API key") for name in names[MAC1])
    assert "docker compose up" in names[MAC1] and "docker compose up" not in names[MAC2]
    # Each fetches only the models of its servers.
    assert any("Llama-3.3-70B-Instruct-f16" in name for name in names[MAC2])
    assert not any("Llama-3.3-70B-Instruct-f16" in name for name in names[MAC1])
    assert not any("Athene" in name for name in names[MAC2])
    # f16 listens on Mac 2's address (never 0.0.0.0), with its key file, in its LaunchDaemon.
    plist = " ".join(plans[MAC2].op("server f16: install (new)").commands)
    key = f"{hosts.DEFAULTS['kitty_paths']['opt_dir']}/keys/f16.key"
    assert f"<string>{MAC2_ADDRESS}</string>" in plist and f"<string>{key}</string>" in plist
    assert "0.0.0.0" not in plist
    assert "<string>127.0.0.1</string>" in " ".join(plans[MAC1].op("server q4: install (new)").commands)


def test_the_app_macs_env_names_the_mac_that_runs_each_server(keys):
    cfgs = placed(inventory())
    assert env_lines(cfgs[MAC1]) == {
        "LLAMACPP_F16_HOST": f"'http://{MAC2_ADDRESS}:8082'",
        "LLAMACPP_Q4_HOST": "'http://host.docker.internal:8083'",
        "LLAMACPP_SUMMARY_HOST": "'http://host.docker.internal:8085'",
        "LLAMACPP_VISION_HOST": "'http://host.docker.internal:8086'",
        "LLAMACPP_F16_API_KEY": f"'{(keys / 'f16.key').read_text().strip()}'",
    }
    # The deploy renders exactly that: a Mac 1 holding this .env plans no write of it.
    two = inventory()
    rules = firewall_rules(two, MAC2)
    assert rules == [firewall.Rule(8082, "server f16", ("192.168.1.10",))]
    facts = {MAC1: converged_mac(cfgs[MAC1], app=True), MAC2: converged_mac(cfgs[MAC2], app=False, rules=rules)}
    plans = multihost.plan_hosts(with_facts(two, facts))
    assert [op.name for op in plans[MAC1].ops] == []
    assert [op.name for op in plans[MAC2].ops] == []


def test_the_memory_budget_passes_for_both_macs_and_names_the_mac_that_overflows():
    two = inventory()
    facts = {MAC1: bootstrapped_mac(), MAC2: bootstrapped_mac()}
    multihost.plan_hosts(with_facts(two, facts))
    everything_on_mac1 = inventory({"studio.local": ["q4", "summary", "vision", "f16"], "studio2.local": []})
    with pytest.raises(memory_budget.BudgetError, match=f"{MAC1}: the enabled model servers do not fit"):
        multihost.plan_hosts(with_facts(everything_on_mac1, facts))


def test_a_bad_placement_fails_before_any_operation_naming_host_and_field():
    bad = inventory({"studio.local": ["q4", "summary", "vision", "f16"], "studio2.local": ["f16", "q5"]})
    with pytest.raises(ConfigError) as raised:
        multihost.plan_hosts(with_facts(bad, {MAC1: bootstrapped_mac(), MAC2: bootstrapped_mac()}))
    message = str(raised.value)
    assert f"{MAC2}: kitty_serves: unknown server 'q5'" in message
    assert f"kitty_servers.f16: runs on {MAC1}, {MAC2}" in message


# --- Moving a server ----------------------------------------------------------------------


def test_moving_summary_from_mac2_to_mac1_plans_exactly_its_removal_install_and_the_env():
    before = inventory({"studio.local": ["q4", "vision"], "studio2.local": ["f16", "summary"]})
    after = inventory()
    cfgs = placed(before)
    # Converged as placed before: summary on Mac 2, behind its address and key.
    assert cfgs[MAC2].servers["summary"].host == MAC2_ADDRESS
    rules = firewall_rules(before, MAC2)
    assert [rule.port for rule in rules] == [8082, 8085]
    facts = {MAC1: converged_mac(cfgs[MAC1], app=True), MAC2: converged_mac(cfgs[MAC2], app=False, rules=rules)}
    assert [op.name for op in multihost.plan_hosts(with_facts(before, facts))[MAC1].ops] == []

    plans = multihost.plan_hosts(with_facts(after, facts))
    # Mac 2 stops and removes it; its firewall and its Prometheus targets drop it. Nothing else there.
    assert server_ops(plans[MAC2]) == {"summary": f"stop and remove (runs on {MAC1})"}
    mark = firewall.digest(firewall_rules(after, MAC2))
    assert [op.name for op in plans[MAC2].ops] == [
        "pf anchor: server f16 (8082)",
        f"Load the pf anchor com.apple/kitty-ops ({mark})",
        f"server summary: stop and remove (runs on {MAC1})",
        "Remove Prometheus's copy of server summary's API key (not scraped with it here now)",
        "Prometheus targets of the model servers",
        "Prometheus scrape jobs of the model servers",
    ]
    assert "port 8085" not in " ".join(plans[MAC2].op("pf anchor: server f16 (8082)").commands)
    # Mac 1 fetches its model, installs it, waits for it alone; its .env changes; compose is asked.
    assert server_ops(plans[MAC1]) == {"summary": "install (new)"}
    names = [op.name for op in plans[MAC1].ops]
    assert names == [
        # The fetch's own folder, cache and script: planned only when something is fetched.
        "models folder",
        "Hugging Face folder",
        "model fetch script",
        "Fetch hermes-3-llama-3.1-8b/Hermes-3-Llama-3.1-8B.Q4_K_M.gguf",
        "server summary: install (new)",
        "Wait for /health of the model servers: server summary",
        # Its Prometheus now scrapes summary on its own loopback, without a key.
        "Remove Prometheus's copy of server summary's API key (not scraped with it here now)",
        "Prometheus targets of the model servers",
        "Prometheus scrape jobs of the model servers",
        "Write .env (mode 0600, contents never shown)",
        "docker compose up",
        "Wait for the stack's health",
    ]
    # The .env's change: summary's URL, and its key no longer sent.
    moved, was = env_lines(placed(after)[MAC1]), env_lines(cfgs[MAC1])
    changed = {name for name in moved.keys() | was.keys() if moved.get(name) != was.get(name)}
    assert changed == {"LLAMACPP_SUMMARY_HOST", "LLAMACPP_SUMMARY_API_KEY"}
    assert moved["LLAMACPP_SUMMARY_HOST"] == "'http://host.docker.internal:8085'"
    assert was["LLAMACPP_SUMMARY_HOST"] == f"'http://{MAC2_ADDRESS}:8085'"
    # compose's up names the .env as its reason: it recreates only the services whose config changed.
    assert "--build" not in " ".join(plans[MAC1].op("docker compose up").commands)


# --- The operator's command -----------------------------------------------------------------


def test_the_two_macs_dry_run_through_pyinfras_cli_plans_each_mac_its_servers(keys):
    result = subprocess.run(
        [sys.executable, "-m", "pyinfra", "tests/plan/simulated_two_macs.py", "deploy.py", "--dry", "--json"],
        cwd=multihost.ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "KITTY_KEYS_DIR": str(keys)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # `names`, not `name`: operations at the same place in the deploy share one hash over the
    # hosts, and `name` is whichever name pyinfra happened to see first.
    by_name = {name: op["hosts_with_change"] for op in json.loads(result.stdout)["plan"] for name in op["names"]}
    installs = {name: hosts_ for name, hosts_ in by_name.items() if name.endswith(": install (new)")}
    # pyinfra names an operation by its place in the deploy, merging the hosts' names: which
    # server each Mac installs is in the names of the operations that change on it.
    mac1 = {name for name, on in installs.items() if MAC1 in on}
    mac2 = {name for name, on in installs.items() if MAC2 in on}
    assert any("server f16" in name for name in mac2) and not any("server f16" in name for name in mac1)
    assert by_name["Application stack | docker compose up"] == [MAC1]
    assert by_name["API keys of the model servers | API key of server f16 (mode 0600, contents never shown)"] == [MAC2]
