"""The models lock resolved for real against the sandbox's Hub mirror (olah behind the Range-honouring front).

No sandbox host: the lock command runs on the controller. It must reproduce the
sandbox's pins (sandbox/group_data/models.lock.json, the values that were
hand-written there before), read the tiny model's shape from its GGUF header
with ranged requests, name a wrong file or revision, and change nothing when
run again.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.config import model_lock

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
MIRROR = [sys.executable, str(ROOT / "sandbox" / "hf-mirror.py")]
SANDBOX_LOCK = ROOT / "sandbox" / "group_data" / "models.lock.json"
SMOL = "SmolLM2-135M-Instruct.Q4_1.gguf"
# What sandbox/group_data/all.py pinned by hand before the lock existed.
HAND_PINS = {
    "smollm2-135m": ("48d5d8de96798f0de3985e4a0a46eaa618212ea0", {SMOL: (98362432, "b179c952")}),
    "sharded-test": (
        "067b1b0876564d5b00488399f6f61fad25f42868",
        {
            "sharded-test-00001-of-00003.gguf": (3000000, "f0fc51d9"),
            "sharded-test-00002-of-00003.gguf": (2900000, "80adfbbd"),
            "sharded-test-00003-of-00003.gguf": (1234567, "ee90c171"),
        },
    ),
}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """A mirror of our own (the sandboxes' serve their converges): same repos, own port, run state and log."""
    subprocess.run([*MIRROR, "prepare"], check=True, stdout=subprocess.DEVNULL)
    own = tmp_path_factory.mktemp("hf-mirror")
    for name in ("venv", "repos"):
        (own / name).symlink_to(ROOT / ".sandbox" / "hf" / name)
    port = free_port()
    subprocess.run([*MIRROR, "serve", "--dir", str(own), "--port", str(port)], check=True)
    yield Mirror(f"http://127.0.0.1:{port}", own / str(port) / "front.log")
    subprocess.run([*MIRROR, "stop", "--dir", str(own), "--port", str(port)], check=True)


class Mirror:
    def __init__(self, url: str, log: Path):
        self.url, self.log = url, log

    def requests(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lock(mirror, tmp_path: Path, models: dict | None = None, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Run lock_models.py with the sandbox's group data, `models` replacing kitty_models, into a lock in tmp_path."""
    data = tmp_path / "group_data"
    data.mkdir(exist_ok=True)
    path = tmp_path / "models.lock.json"
    base = str(ROOT / "sandbox" / "group_data" / "all.py")
    source = f"import runpy\n_base = runpy.run_path({base!r})\n"
    source += f"kitty_model_policy = {{**_base['kitty_model_policy'], 'lock_file': {str(path)!r}}}\n"
    source += f"kitty_models = {models!r}\n" if models is not None else "kitty_models = _base['kitty_models']\n"
    (data / "all.py").write_text(source)
    result = subprocess.run(
        [sys.executable, str(ROOT / "lock_models.py"), "--group-data", str(ROOT / "sandbox" / "group_data")]
        + ["--group-data", str(data), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "HF_ENDPOINT": mirror.url,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        },
    )
    return result, path


def sandbox_models() -> dict:
    import runpy

    return runpy.run_path(str(ROOT / "sandbox" / "group_data" / "all.py"))["kitty_models"]


def test_the_lock_reproduces_the_sandbox_pins_and_the_tiny_models_shape(mirror, tmp_path):
    before = len(mirror.requests())
    result, path = lock(mirror, tmp_path)
    assert result.returncode == 0, result.stderr
    locked = model_lock.read(path)
    for name, (commit, files) in HAND_PINS.items():
        assert locked[name]["commit"] == commit
        for file, (size, sha_prefix) in files.items():
            assert locked[name]["files"][file]["size"] == size
            assert locked[name]["files"][file]["sha256"].startswith(sha_prefix)
    shape = locked["smollm2-135m"]["files"][SMOL]["gguf"]
    assert (shape["block_count"], shape["head_count_kv"], shape["embedding_length"] // shape["head_count"]) == (
        30,
        3,
        64,
    )
    # The lock the main job's group data reads is exactly this.
    assert path.read_text() == SANDBOX_LOCK.read_text()
    # The header came from ranged reads of the first megabytes, not from the 98 MB file.
    requests = mirror.requests()[before:]
    smol_gets = [line for line in requests if line.startswith("GET ") and SMOL in line]
    assert smol_gets and all(" 206 range=bytes=" in line for line in smol_gets)
    assert sum(int(re.search(r"sent=(\d+)", line).group(1)) for line in smol_gets) < 4 * 2**20


def test_a_second_run_changes_nothing_and_asks_nothing(mirror, tmp_path):
    first, path = lock(mirror, tmp_path)
    assert first.returncode == 0, first.stderr
    written = path.stat().st_mtime_ns
    before = mirror.requests()
    again, _ = lock(mirror, tmp_path)
    assert again.returncode == 0 and "unchanged (2 models)" in again.stdout, again.stdout + again.stderr
    assert path.stat().st_mtime_ns == written
    assert mirror.requests() == before


def test_a_file_missing_at_the_revision_is_named(mirror, tmp_path):
    models = sandbox_models()
    models["sharded-test"]["files"][1]["name"] = "sharded-test-00002-of-00004.gguf"
    result, path = lock(mirror, tmp_path, models)
    assert result.returncode == 1
    assert (
        "kitty_models.sharded-test.files[1]: 'sharded-test-00002-of-00004.gguf' is not in "
        "kitty-test/sharded-test-GGUF at v1" in result.stderr
    )
    assert not path.exists()


def test_a_revision_that_does_not_exist_is_named(mirror, tmp_path):
    models = sandbox_models()
    models["smollm2-135m"]["revision"] = "no-such-branch"
    result, _ = lock(mirror, tmp_path, models)
    assert result.returncode == 1
    assert (
        "kitty_models.smollm2-135m.revision: 'no-such-branch' is not a branch, tag or commit of "
        "kitty-test/SmolLM2-135M-Instruct-GGUF" in result.stderr
    )


def test_upgrade_moves_only_the_model_named(mirror, tmp_path):
    result, path = lock(mirror, tmp_path)
    assert result.returncode == 0, result.stderr
    stale = json.loads(path.read_text())
    # As if both had been locked at an older commit of their revision.
    for name in ("smollm2-135m", "sharded-test"):
        stale["models"][name]["commit"] = "0" * 40
    path.write_text(json.dumps(stale, indent=2) + "\n")
    result, _ = lock(mirror, tmp_path, None, "--upgrade", "smollm2-135m")
    assert result.returncode == 0, result.stderr
    locked = model_lock.read(path)
    assert locked["smollm2-135m"]["commit"] == HAND_PINS["smollm2-135m"][0]
    assert locked["sharded-test"]["commit"] == "0" * 40
