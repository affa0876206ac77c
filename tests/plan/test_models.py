"""Model files planned for simulated hosts: fetch only what is not verified, refuse unpinned, check the disk."""

import copy

import pytest
from pyinfra.api.exceptions import PyinfraError

from tasks import config, models
from tests.plan import hosts, inference_facts
from tests.plan.harness import plan

CFG = config.load(hosts.DEFAULTS)
F16_SHARDS = [w.rel for w in models.wanted_files(CFG) if w.model_name == "llama-3.3-70b-f16"]


def fetches(result) -> list[str]:
    return [op.name.removeprefix("Fetch ") for op in result.ops if op.name.startswith("Fetch ")]


def linux_missing(*rels: str) -> dict:
    """A converged Linux host on which `rels` are missing."""
    facts = hosts.linux_converged()
    states = inference_facts.model_files(CFG)
    key = next(iter(states))
    facts[key] = [line for line in states[key] if line.split("|")[0] not in rels] + [f"{rel}|||" for rel in rels]
    return facts


def test_every_file_of_every_enabled_server_is_wanted_shards_and_projector_included():
    rels = [w.rel for w in models.wanted_files(CFG)]
    assert len(F16_SHARDS) == 4 and set(F16_SHARDS) <= set(rels)
    assert "gemma-3-27b-it-GGUF/mmproj-google_gemma-3-27b-it-bf16.gguf" in rels


def test_a_disabled_servers_model_is_not_fetched():
    data = copy.deepcopy(hosts.DEFAULTS)
    data["kitty_servers"]["f16"]["enabled"] = False
    assert not [w for w in models.wanted_files(config.load(data)) if w.model_name == "llama-3.3-70b-f16"]


def test_converged_host_fetches_nothing_and_hashes_nothing():
    result = plan(hosts.linux_converged())
    assert fetches(result) == []
    state_facts = [command for command, _ in result.executed if "for rel in" in command]
    assert state_facts and not any("sha256sum" in command for command in state_facts)


def test_full_verify_hashes_every_file():
    result = plan(hosts.linux_converged(), data={"verify_models": "full"})
    state_facts = [command for command, _ in result.executed if "for rel in" in command]
    assert state_facts and all("sha256sum" in command for command in state_facts)


def test_only_the_missing_shard_is_fetched_with_hf_at_its_revision():
    result = plan(linux_missing(F16_SHARDS[1]))
    assert fetches(result) == [F16_SHARDS[1]]
    (command,) = result.op(f"Fetch {F16_SHARDS[1]}").commands
    assert "/opt/kitty/hf/bin/hf" in command and "bartowski/Llama-3.3-70B-Instruct-GGUF" in command


def test_a_stamp_whose_size_or_mtime_moved_is_not_trusted():
    facts = hosts.linux_converged()
    key = next(iter(inference_facts.model_files(CFG)))
    lines = list(facts[key])
    rel, stat, stamp, actual = lines[0].split("|")
    size, mtime = stat.split()
    lines[0] = f"{rel}|{size} {int(mtime) + 5}|{stamp}|{actual}"
    facts[key] = lines
    assert fetches(plan(facts)) == [rel]


def test_unpinned_revisions_are_refused_unless_allowed():
    with pytest.raises(
        PyinfraError, match="refusing to download models whose revision is not pinned: llama-3.3-70b-f16"
    ):
        plan(linux_missing(F16_SHARDS[0]), data={"allow_unpinned_models": False})


def test_files_already_verified_need_no_pin():
    assert plan(hosts.linux_converged(), data={"allow_unpinned_models": False}).ops == []


def test_disk_preflight_fails_before_any_fetch_with_the_numbers():
    facts = linux_missing(*F16_SHARDS)
    facts["df -Pk"] = str(50 * 10**6)  # KiB: 51.2 GB free
    with pytest.raises(PyinfraError, match=r"141\.2 GB needed, 51\.2 GB free"):
        plan(facts)


def test_hf_runs_with_telemetry_and_update_checks_off_and_the_configured_mirror():
    env = models._hf_env(config.load({**hosts.DEFAULTS, "kitty_model_policy": {"hf_endpoint": "http://nas:8090"}}))
    assert env["HF_HUB_DISABLE_TELEMETRY"] == "1" and env["HF_HUB_DISABLE_UPDATE_CHECK"] == "1"
    assert env["HF_ENDPOINT"] == "http://nas:8090"


def test_the_hf_token_goes_to_a_0600_file_and_never_into_a_command(monkeypatch):
    token = "hf_secretTOKEN1234567890"
    monkeypatch.setenv("HF_TOKEN", token)
    result = plan(linux_missing(F16_SHARDS[0]))
    upload = result.op("Hugging Face token").commands
    assert any("chmod 600 /opt/kitty/hf/token" in command for command in upload)
    everything = result.commands + [command for command, _ in result.executed]
    assert not [command for command in everything if token in command]
