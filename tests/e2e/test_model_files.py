"""Model files on the sandbox host, from a real HF mirror on loopback: verified once, never re-fetched."""

import re

import pytest

from tests.e2e.conftest import ROOT, converge, sandbox_data, ssh

pytestmark = pytest.mark.e2e
MODELS = "/srv/kitty/models"
SHARD = "sharded-test/sharded-test-00002-of-00003.gguf"
LAST_SHARD = "sharded-test/sharded-test-00003-of-00003.gguf"
ACCESS_LOG = ROOT / ".sandbox" / "hf" / "olah.log"


def mirror_requests() -> list[str]:
    return re.findall(r'"(?:GET|HEAD) (\S+) HTTP/1\.1"', ACCESS_LOG.read_text())


def fetched(result) -> list[str]:
    return [name for name in result.changed if name.startswith("Model files | Fetch")]


def test_every_file_is_downloaded_and_stamped(sandbox, first_converge):
    data = sandbox_data()
    for model in data["kitty_models"].values():
        for file in model["files"]:
            rel = f"{model['dir']}/{file['name']}"
            stamp = ssh(sandbox, f"cat {MODELS}/{model['dir']}/.kitty/{file['name']}.stamp").stdout.split()
            assert stamp[0] == file["sha256"], rel
            assert int(stamp[1]) == file["size"], rel


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
    expected = next(f for f in sandbox_data()["kitty_models"]["sharded-test"]["files"] if SHARD.endswith(f["name"]))
    assert ssh(sandbox, f"sha256sum {path}").stdout.split()[0] == expected["sha256"]


def test_a_wrong_pinned_sha256_fails_clearly_and_leaves_nothing_at_the_final_path(sandbox, first_converge, tmp_path):
    data = sandbox_data()
    models = data["kitty_models"]
    models["sharded-test"]["files"][2]["sha256"] = "0" * 64
    ssh(sandbox, f"rm -f {MODELS}/{LAST_SHARD}")
    result = converge(sandbox, tmp_path, overrides={"kitty_models": models})
    assert result.code != 0
    assert f"sha256 mismatch for {LAST_SHARD}: expected {'0' * 64}, got ee90c171" in result.output
    assert ssh(sandbox, f"test -e {MODELS}/{LAST_SHARD}", check=False).returncode != 0
    assert ssh(sandbox, f"ls {MODELS}/.kitty-staging/sharded-test", check=False).stdout.strip() in ("", ".cache")


def test_an_interrupted_download_is_completed_and_its_leftovers_removed(sandbox, first_converge):
    # What a killed `hf download` leaves: no final file, an orphaned .incomplete.
    staging = f"{MODELS}/.kitty-staging/sharded-test/.cache/huggingface/download"
    ssh(
        sandbox,
        f"rm -f {MODELS}/{LAST_SHARD} && mkdir -p {staging} && head -c 500000 /dev/zero > {staging}/x.incomplete",
    )
    result = converge(sandbox)
    assert result.code == 0, result.output[-3000:]
    assert fetched(result) == [f"Model files | Fetch {LAST_SHARD}"]
    assert ssh(sandbox, f"find {MODELS}/.kitty-staging -name '*.incomplete'").stdout.strip() == ""


def test_the_disk_preflight_fails_early_with_the_numbers(sandbox, first_converge, tmp_path):
    models = sandbox_data()["kitty_models"]
    models["huge"] = {
        "repo": "kitty-test/sharded-test-GGUF",
        "revision": models["sharded-test"]["revision"],
        "dir": "huge",
        "prefetch": True,
        "files": [{"name": "sharded-test-00001-of-00003.gguf", "size": 10**15}],
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
