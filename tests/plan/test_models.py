"""Model files planned for simulated hosts: fetch only what is not verified, at the locked commit, resumably;
refuse unpinned; catch corruption with or without a pin; check the disk counting partial downloads.

The defaults' lock (group_data/models.lock.json) holds what could be looked up
on huggingface.co for the manual's models: the F16 model's commit; the others
are marked unknown there, so they stay unpinned.
"""

import copy
import json
import logging

import pytest
from pyinfra.api.exceptions import PyinfraError

from tasks import config
from tasks.config import model_lock
from tasks.inference import models
from tests.plan import hosts, inference_facts
from tests.plan.harness import plan

CFG = config.load(hosts.DEFAULTS)
F16_SHARDS = [w.rel for w in models.wanted_files(CFG) if w.model_name == "llama-3.3-70b-f16"]
HERMES = next(w.rel for w in models.wanted_files(CFG) if w.model_name == "hermes-summary")
F16_COMMIT = json.loads((model_lock.ROOT / "group_data" / "models.lock.json").read_text())["models"][
    "llama-3.3-70b-f16"
]["commit"]
STATES_KEY = next(iter(inference_facts.model_files(CFG)))


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


def test_only_the_missing_shard_is_fetched_with_curl_at_its_locked_commit():
    result = plan(linux_missing(F16_SHARDS[1]))
    assert fetches(result) == [F16_SHARDS[1]]
    (command,) = result.op(f"Fetch {F16_SHARDS[1]}").commands
    repo = "https://huggingface.co/bartowski/Llama-3.3-70B-Instruct-GGUF"
    url = f"{repo}/resolve/{F16_COMMIT}/{F16_SHARDS[1].split('/', 1)[1]}"
    assert f" curl {url}" in command and "/hf/bin/hf" not in command


def test_the_lock_gives_the_commit_size_and_sha256_and_the_fetch_checks_them(tmp_path):
    lock = _lock_with_hermes(tmp_path, size=4920734016, sha256="ab" * 32)
    data = {"kitty_model_policy": {**hosts.DEFAULTS["kitty_model_policy"], "lock_file": str(lock)}}
    (command,) = plan(linux_missing(HERMES), data=data).op(f"Fetch {HERMES}").commands
    assert f"Hermes-3-Llama-3.1-8B.Q4_K_M.gguf {'ab' * 32} 4920734016 curl " in command
    assert f"/NousResearch/Hermes-3-Llama-3.1-8B-GGUF/resolve/{'c' * 40}/Hermes-3-Llama-3.1-8B.Q4_K_M.gguf" in command


def _lock_with_hermes(tmp_path, **file):
    entry = {
        "repo": "NousResearch/Hermes-3-Llama-3.1-8B-GGUF",
        "revision": "main",
        "commit": "c" * 40,
        "files": {"Hermes-3-Llama-3.1-8B.Q4_K_M.gguf": {"size": None, "sha256": None, "gguf": None, **file}},
    }
    path = tmp_path / "models.lock.json"
    model_lock.write(path, {"hermes-summary": entry})
    return path


def test_a_lock_resolved_for_another_revision_is_refused_naming_the_model(tmp_path):
    lock = _lock_with_hermes(tmp_path)
    data = copy.deepcopy(hosts.DEFAULTS)
    data["kitty_model_policy"]["lock_file"] = str(lock)
    data["kitty_models"]["hermes-summary"]["revision"] = "v2"
    with pytest.raises(config.ConfigError, match=r"kitty_models.hermes-summary: the lock resolved .*@main, not .*@v2"):
        config.load(data)


def test_a_hand_written_sha256_that_differs_from_the_lock_is_refused(tmp_path):
    lock = _lock_with_hermes(tmp_path, sha256="ab" * 32)
    data = copy.deepcopy(hosts.DEFAULTS)
    data["kitty_model_policy"]["lock_file"] = str(lock)
    data["kitty_models"]["hermes-summary"]["files"][0]["sha256"] = "cd" * 32
    with pytest.raises(
        config.ConfigError, match=r"hermes-summary.files\[0\].sha256: cdcd.* differs from the lock's abab"
    ):
        config.load(data)


def test_the_hf_downloader_is_still_there_for_hosts_that_need_it():
    policy = {**hosts.DEFAULTS["kitty_model_policy"], "downloader": "hf"}
    (command,) = (
        plan(linux_missing(F16_SHARDS[1]), data={"kitty_model_policy": policy}).op(f"Fetch {F16_SHARDS[1]}").commands
    )
    assert f" hf /opt/kitty/hf/bin/hf bartowski/Llama-3.3-70B-Instruct-GGUF {F16_COMMIT}" in command


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
    with pytest.raises(PyinfraError, match="refusing to download models whose revision is not pinned: hermes-summary"):
        plan(linux_missing(HERMES), data={"allow_unpinned_models": False})


def test_a_model_locked_with_its_sha256_needs_no_allow_unpinned(tmp_path):
    lock = _lock_with_hermes(tmp_path, size=4920734016, sha256="ab" * 32)
    data = {
        "allow_unpinned_models": False,
        "kitty_model_policy": {**hosts.DEFAULTS["kitty_model_policy"], "lock_file": str(lock)},
    }
    assert fetches(plan(linux_missing(HERMES), data=data)) == [HERMES]


def test_a_commit_without_a_sha256_is_refused_unless_unpinned_downloads_are_allowed():
    """The shipped lock's F16 entry: a commit, no sha256. Any bytes starting with GGUF would pass."""
    with pytest.raises(PyinfraError, match=f"no sha256 to check them against: .*{F16_SHARDS[0]}"):
        plan(linux_missing(F16_SHARDS[0]), data={"allow_unpinned_models": False})
    assert fetches(plan(linux_missing(F16_SHARDS[0]), data={"allow_unpinned_models": True})) == [F16_SHARDS[0]]


def _hashed(**lines_by_rel) -> dict:
    """A converged host, as full verify sees it: each file hashes to its stamp's hash, except `lines_by_rel`."""
    facts = hosts.linux_converged()
    lines = []
    for line in inference_facts.model_files(CFG)[STATES_KEY]:
        rel, stat, stamp, _ = line.split("|")
        lines.append(lines_by_rel.get(rel, f"{rel}|{stat}|{stamp}|{stamp.split()[0]}"))
    facts[STATES_KEY] = lines
    return facts


def test_full_verify_refetches_a_corrupt_file_with_the_hash_its_stamp_recorded(caplog):
    # Nothing pinned for the Hermes file: its stamp's hash, from when it was first verified, is the reference.
    first, flipped = "1" * 64, "2" * 64
    line = f"{HERMES}|4900000000 {inference_facts.MTIME}|{first} 4900000000 {inference_facts.MTIME}|{flipped}"
    with caplog.at_level(logging.WARNING):
        result = plan(_hashed(**{HERMES: line}), data={"verify_models": "full"})
    assert fetches(result) == [HERMES]
    (command,) = result.op(f"Fetch {HERMES}").commands
    # The script is told the stamp's hash: the corrupt file cannot vouch for itself.
    assert f"Hermes-3-Llama-3.1-8B.Q4_K_M.gguf {first} - curl" in command
    assert f"{HERMES} is CORRUPT: sha256 {flipped} is not the first verified {first}" in caplog.text


def test_full_verify_refetches_a_file_whose_hash_is_not_the_pinned_one(tmp_path, caplog):
    pinned, flipped = "ab" * 32, "2" * 64
    lock = _lock_with_hermes(tmp_path, sha256=pinned, size=4900000000)
    data = {
        "verify_models": "full",
        "kitty_model_policy": {**hosts.DEFAULTS["kitty_model_policy"], "lock_file": str(lock)},
    }
    line = f"{HERMES}|4900000000 {inference_facts.MTIME}|{pinned} 4900000000 {inference_facts.MTIME}|{flipped}"
    with caplog.at_level(logging.WARNING):
        result = plan(_hashed(**{HERMES: line}), data=data)
    assert fetches(result) == [HERMES]
    assert f"is CORRUPT: sha256 {flipped} is not the pinned {pinned}" in caplog.text


def test_a_stamp_converge_says_it_trusts_the_stamps(caplog):
    with caplog.at_level(logging.INFO):
        assert fetches(plan(hosts.linux_converged())) == []
    count = len(models.wanted_files(CFG))
    assert f"trusting the stamps (size and mtime) of {count} model file(s)" in caplog.text


def test_files_already_verified_need_no_pin():
    result = plan(hosts.linux_converged(), data={"allow_unpinned_models": False})
    assert [op.name for op in result.ops if "model" in op.name.lower() or op.name.startswith("Fetch")] == []


def test_disk_preflight_fails_before_any_fetch_with_the_numbers():
    facts = linux_missing(*F16_SHARDS)
    facts["df -Pk"] = str(50 * 10**6)  # KiB: 51.2 GB free
    with pytest.raises(PyinfraError, match=r"141\.2 GB needed, 51\.2 GB free on the volume of .*: 90\.0 GB missing"):
        plan(facts)


def test_disk_preflight_counts_what_an_interrupted_download_already_has():
    facts = linux_missing(*F16_SHARDS)
    # 30 GB of the first shard are in staging from an interrupted run: only the rest is still to come.
    facts[STATES_KEY] = [
        line + ("|30000000000" if line.startswith(F16_SHARDS[0]) else "") for line in facts[STATES_KEY]
    ]
    facts["df -Pk"] = str(50 * 10**6)
    with pytest.raises(
        PyinfraError, match=r"111\.2 GB needed \(30\.0 GB already downloaded\), 51\.2 GB free.*60\.0 GB missing"
    ):
        plan(facts)
    facts["df -Pk"] = str(112 * 10**6)  # 114.7 GB: enough once the partial is counted
    assert fetches(plan(facts)) == F16_SHARDS


def test_hf_runs_with_telemetry_and_update_checks_off_and_the_configured_mirror():
    env = models._hf_env(config.load({**hosts.DEFAULTS, "kitty_model_policy": {"hf_endpoint": "http://nas:8090"}}))
    assert env["HF_HUB_DISABLE_TELEMETRY"] == "1" and env["HF_HUB_DISABLE_UPDATE_CHECK"] == "1"
    assert env["HF_ENDPOINT"] == "http://nas:8090"


def test_the_hf_token_goes_to_a_0600_file_and_never_into_a_command(monkeypatch):
    token = "hf_secretTOKEN1234567890"
    monkeypatch.setenv("HF_TOKEN", token)
    result = plan(linux_missing(F16_SHARDS[0]))
    for name, path in (
        ("Hugging Face token", "/opt/kitty/hf/token"),
        ("Hugging Face token header", "/opt/kitty/hf/auth-header"),
    ):
        upload = result.op(name).commands
        assert any("chmod 600" in command and path in command for command in upload)
    (fetch,) = result.op(f"Fetch {F16_SHARDS[0]}").commands
    assert "'KITTY_AUTH_HEADER_FILE': '/opt/kitty/hf/auth-header'" in fetch
    everything = result.commands + [command for command, _ in result.executed]
    assert not [command for command in everything if token in command]


def test_a_file_with_no_pinned_sha256_is_fetched_again_against_its_stamps_hash():
    """No sha256 in the lock, but a copy was verified before: its stamp's hash checks the new download."""
    first, flipped = "1" * 64, "2" * 64
    rel = F16_SHARDS[0]
    line = f"{rel}|40000000000 {inference_facts.MTIME}|{first} 40000000000 {inference_facts.MTIME}|{flipped}"
    result = plan(_hashed(**{rel: line}), data={"verify_models": "full", "allow_unpinned_models": False})
    assert fetches(result) == [rel]
    (command,) = result.op(f"Fetch {rel}").commands
    assert f" {first} - curl" in command
