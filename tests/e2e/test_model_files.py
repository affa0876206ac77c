"""Model files on the sandbox host, from a real HF mirror on loopback: locked, verified once, never re-fetched,
corruption caught with or without a pinned hash, interrupted downloads resumed."""

import copy
import json
import re
import subprocess
import sys

import pytest

from sandbox import converge as sandbox_converge
from tasks.config import model_lock
from tests.e2e.conftest import ROOT, converge, sandbox_config, sandbox_data, ssh

pytestmark = pytest.mark.e2e
MODELS = "/srv/kitty/models"
SHARD = "sharded-test/sharded-test-00002-of-00003.gguf"
LAST_SHARD = "sharded-test/sharded-test-00003-of-00003.gguf"
# The mirror's front on this session's port (sandbox/hf-mirror.py): one line per request,
# with the bytes it sent; faults.json makes it misbehave.
ACCESS_LOG = sandbox_converge.hf_mirror_state() / "front.log"
FAULTS = sandbox_converge.hf_mirror_state() / "faults.json"
SANDBOX_LOCK = ROOT / "sandbox" / "group_data" / "models.lock.json"


def mirror_requests() -> list[str]:
    return re.findall(r"^(?:GET|HEAD|POST) (\S+) ", ACCESS_LOG.read_text(), re.MULTILINE)


def lock_with(tmp_path, change) -> dict:
    """kitty_model_policy pointing at a copy of the sandbox's lock that `change(models)` edited."""
    models = copy.deepcopy(model_lock.read(SANDBOX_LOCK))
    change(models)
    path = tmp_path / "models.lock.json"
    model_lock.write(path, models)
    return {**sandbox_data()["kitty_model_policy"], "lock_file": str(path)}


def fetched(result) -> list[str]:
    return [name for name in result.changed if name.startswith("Model files | Fetch")]


def test_every_file_is_downloaded_and_stamped_with_the_locked_values(sandbox, first_converge):
    for model in sandbox_config().models.values():
        assert model.pinned
        for file in model.files:
            rel = f"{model.dir}/{file.name}"
            stamp = ssh(sandbox, f"cat {MODELS}/{model.dir}/.kitty/{file.name}.stamp").stdout.split()
            assert file.sha256 and stamp[0] == file.sha256, rel
            assert int(stamp[1]) == file.size, rel


def test_a_no_op_converge_makes_no_request_and_hashes_nothing(sandbox, first_converge):
    before = mirror_requests()
    result = converge(sandbox)
    assert result.code == 0 and fetched(result) == []
    assert mirror_requests() == before
    # Nothing was re-read: the stamp (and its mtime) of every file is untouched.
    assert "verifying" not in result.output and "hashing" not in result.output


def test_corruption_is_found_on_demand_and_the_file_replaced(sandbox, first_converge):
    path = f"{MODELS}/{SHARD}"
    # Flip bytes in the middle, then put size and mtime back: only a full hash can tell.
    ssh(
        sandbox,
        f"m=$(stat -c %Y {path}) && printf 'XXXXXXXX' | dd of={path} bs=1 seek=100000 conv=notrunc status=none "
        f"&& touch -d @$m {path}",
    )
    assert fetched(converge(sandbox)) == []
    result = converge(sandbox, args=["--data", "verify_models=full"])
    assert result.code == 0, result.output[-3000:]
    assert fetched(result) == [f"Model files | Fetch {SHARD}"]
    expected = model_lock.read(SANDBOX_LOCK)["sharded-test"]["files"][SHARD.split("/")[1]]["sha256"]
    assert "is CORRUPT: sha256" in result.output and f"is not the pinned {expected}" in result.output
    assert ssh(sandbox, f"sha256sum {path}").stdout.split()[0] == expected


def test_corruption_without_a_pinned_hash_is_found_against_the_stamp_and_replaced(sandbox, first_converge, tmp_path):
    # The lock knows no sha256 for this shard: the stamp's, from when it was first verified, is the reference.
    policy = lock_with(tmp_path, lambda m: m["sharded-test"]["files"][SHARD.split("/")[1]].update(sha256=None))
    path = f"{MODELS}/{SHARD}"
    good = ssh(sandbox, f"sha256sum {path}").stdout.split()[0]
    ssh(
        sandbox,
        f"m=$(stat -c %Y {path}) && printf 'YYYYYYYY' | dd of={path} bs=1 seek=2000000 conv=notrunc status=none "
        f"&& touch -d @$m {path}",
    )
    stamp_mode = converge(sandbox, tmp_path, overrides={"kitty_model_policy": policy})
    assert fetched(stamp_mode) == [] and "trusting the stamps" in stamp_mode.output
    result = converge(sandbox, tmp_path, overrides={"kitty_model_policy": {**policy, "verify": "full"}})
    assert result.code == 0, result.output[-3000:]
    assert f"{SHARD} is CORRUPT" in result.output and f"is not the first verified {good}" in result.output
    assert fetched(result) == [f"Model files | Fetch {SHARD}"]
    assert ssh(sandbox, f"sha256sum {path}").stdout.split()[0] == good
    assert (
        ssh(sandbox, f"cut -d' ' -f1 {MODELS}/sharded-test/.kitty/{SHARD.split('/')[1]}.stamp").stdout.strip() == good
    )


def test_a_wrong_pinned_sha256_fails_clearly_and_leaves_nothing_at_the_final_path(sandbox, first_converge, tmp_path):
    policy = lock_with(tmp_path, lambda m: m["sharded-test"]["files"][LAST_SHARD.split("/")[1]].update(sha256="0" * 64))
    ssh(sandbox, f"rm -f {MODELS}/{LAST_SHARD}")
    result = converge(sandbox, tmp_path, overrides={"kitty_model_policy": policy})
    assert result.code != 0
    assert f"sha256 mismatch for {LAST_SHARD}: expected {'0' * 64}, got ee90c171" in result.output
    assert ssh(sandbox, f"test -e {MODELS}/{LAST_SHARD}", check=False).returncode != 0
    assert ssh(sandbox, f"ls {MODELS}/.kitty-staging/sharded-test", check=False).stdout.strip() == ""
    # Back to the real lock: the file comes back.
    assert converge(sandbox).code == 0


def large_model() -> dict:
    """The mirror's 40 MB seeded file, pinned inline (commit, size, sha256 from the mirror itself)."""
    info = json.loads(
        subprocess.run(
            [sys.executable, str(ROOT / "sandbox" / "hf-mirror.py"), "info"], check=True, capture_output=True
        ).stdout
    )["kitty-test/large-test-GGUF"]
    file = info["files"]["large-test.gguf"]
    return {
        "repo": "kitty-test/large-test-GGUF",
        "revision": info["commit"],
        "dir": "large-test",
        "prefetch": True,
        "files": [{"name": "large-test.gguf", "size": file["size"], "sha256": file["sha256"]}],
    }


def test_a_download_cut_off_midway_resumes_and_fetches_the_file_about_once(sandbox, first_converge, tmp_path):
    models = {**sandbox_data()["kitty_models"], "large": large_model()}
    size = models["large"]["files"][0]["size"]
    before = len(ACCESS_LOG.read_text().splitlines())
    # The connection drops after 15 MB (the mirror's front stops sending and closes it).
    FAULTS.write_text(json.dumps({"large-test.gguf": {"cut_after": 15_000_000, "rate": 20_000_000}}))
    try:
        cut = converge(sandbox, tmp_path, overrides={"kitty_models": models})
    finally:
        FAULTS.unlink(missing_ok=True)
    assert cut.code != 0 and "(kept: the next converge resumes)" in cut.output, cut.output[-3000:]
    part = f"{MODELS}/.kitty-staging/large-test/large-test.gguf.part"
    assert int(ssh(sandbox, f"stat -c %s {part}").stdout) == 15_000_000
    resumed = converge(sandbox, tmp_path, overrides={"kitty_models": models})
    assert resumed.code == 0, resumed.output[-3000:]
    assert "resuming at 14.3 MiB" in resumed.output
    gets = [
        line
        for line in ACCESS_LOG.read_text().splitlines()[before:]
        if line.startswith("GET ") and "large-test.gguf" in line
    ]
    assert [re.search(r"range=(\S+)", line).group(1) for line in gets] == ["-", "bytes=15000000-"]
    sent = sum(int(re.search(r"sent=(\d+)", line).group(1)) for line in gets)
    print(f"bytes sent by the mirror for a {size}-byte file cut at 15 MB and resumed: {sent} ({sent / size:.3f}x)")
    assert sent < 1.2 * size
    sha = models["large"]["files"][0]["sha256"]
    assert ssh(sandbox, f"sha256sum {MODELS}/large-test/large-test.gguf").stdout.split()[0] == sha
    ssh(sandbox, f"rm -rf {MODELS}/large-test")


def test_the_disk_preflight_fails_early_with_the_numbers(sandbox, first_converge, tmp_path):
    models = sandbox_data()["kitty_models"]
    models["huge"] = {
        "repo": "kitty-test/sharded-test-GGUF",
        "revision": sandbox_config().models["sharded-test"].commit,
        "dir": "huge",
        "prefetch": True,
        # Pinned in content too (a hash nobody will reach): an unhashed file is refused before the
        # disk is even looked at, and this test is about the disk.
        "files": [{"name": "sharded-test-00001-of-00003.gguf", "size": 10**15, "sha256": "0" * 64}],
    }
    before = mirror_requests()
    result = converge(sandbox, tmp_path, overrides={"kitty_models": models})
    assert result.code != 0
    assert re.search(r"not enough disk for the model files: 1000000\.0 GB needed, [\d.]+ GB free", result.output)
    assert mirror_requests() == before


def test_files_nobody_uses_are_reported_not_deleted(sandbox, first_converge):
    ssh(sandbox, f"mkdir -p {MODELS}/old && echo x > {MODELS}/old/stale.gguf")
    result = converge(sandbox)
    assert f"{MODELS}/old/stale.gguf is not used by any model" in result.output
    assert ssh(sandbox, f"test -f {MODELS}/old/stale.gguf", check=False).returncode == 0
    result = converge(sandbox, args=["--data", "delete_unreferenced_models=true"])
    assert result.code == 0
    assert ssh(sandbox, f"test -f {MODELS}/old/stale.gguf", check=False).returncode != 0
