"""The host scripts (templates/*.sh) and fact commands, executed for real under dash, busybox sh and bash.

macOS runs them with /bin/sh, which is bash 3.2 in POSIX mode, on a BSD
userland. No Mac here: dash catches bash-isms, and busybox sh with a PATH
that holds ONLY busybox's applets is a second, non-GNU userland that catches
GNU-only flags. Tools the scripts legitimately need that busybox lacks are
linked in one by one, each with its reason (see `userland`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tasks import config
from tasks.inference import models
from tasks.inference.llamacpp_facts import GitRemoteRef, LlamaCppBuilds
from tasks.inference.model_facts import ModelFileStates

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
HOST_SCRIPTS = sorted(TEMPLATES.glob("*.sh"))
WAIT = TEMPLATES / "wait-healthy.sh"
FETCH = TEMPLATES / "model-fetch.sh"
BUILD = TEMPLATES / "llama-build.sh"
SHELLS = ["dash", "busybox", "bash"]
# Not in busybox, needed by the scripts on every host (macOS ships them, the
# deploy installs them): curl (wait-healthy), git (llama-build and the ref fact).
REAL_TOOLS = ["curl", "git"]

needs_shells = pytest.mark.skipif(
    not (shutil.which("dash") and shutil.which("busybox")), reason="dash and busybox are installed by .ci/setup"
)


@pytest.fixture(scope="module")
def userland(tmp_path_factory) -> dict[str, Path]:
    """Per shell, a folder to put first on PATH: busybox's applets alone for busybox, shims for all."""
    base = tmp_path_factory.mktemp("userland")
    shims = base / "shims"
    shims.mkdir()
    cmake = shims / "cmake"
    cmake.write_text(FAKE_CMAKE)
    cmake.chmod(0o755)
    only_busybox = base / "busybox"
    only_busybox.mkdir()
    subprocess.run(["busybox", "--install", "-s", str(only_busybox)], check=True)
    for tool in REAL_TOOLS:
        (only_busybox / tool).unlink(missing_ok=True)
        (only_busybox / tool).symlink_to(shutil.which(tool))
    (only_busybox / "cmake").unlink(missing_ok=True)
    (only_busybox / "cmake").symlink_to(cmake)
    return {"shims": shims, "busybox": only_busybox}


def run(shell: str, userland: dict, argv: list[str], env: dict | None = None, timeout: float = 60):
    """`argv[0]` (a script) run by `shell`, or `-c CODE` when argv starts with -c."""
    home = userland["shims"].parent / "home"
    home.mkdir(exist_ok=True)
    base_env = {"HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C", "TMPDIR": str(home)}
    if shell == "busybox":
        command = ["/usr/bin/busybox", "sh", *argv]
        base_env["PATH"] = str(userland["busybox"])
    else:
        command = [shutil.which(shell), *argv]
        base_env["PATH"] = f"{userland['shims']}:/usr/local/bin:/usr/bin:/bin"
    return subprocess.run(
        command, env={**base_env, **(env or {})}, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_every_host_script_is_posix_sh_by_shebang():
    assert HOST_SCRIPTS, "no host scripts found"
    for script in HOST_SCRIPTS:
        assert script.read_text().startswith("#!/bin/sh\n"), script.name


def test_every_host_script_is_shellcheck_clean_as_posix_sh():
    if not shutil.which("shellcheck"):
        if os.environ.get("CI"):
            pytest.fail("shellcheck is missing (.ci/start-docker.sh installs it)")
        pytest.skip("shellcheck is not installed")
    result = subprocess.run(
        ["shellcheck", "-s", "sh", *map(str, HOST_SCRIPTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


# --- wait-healthy.sh --------------------------------------------------------------


class Health(BaseHTTPRequestHandler):
    """/ok: 200; /loading: 503 for the first 1.5 s, then 200; /empty: 204 (an HTTP API's "any 2xx")."""

    started = 0.0

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/ok":
            code = 200
        elif self.path == "/loading":
            code = 503 if time.monotonic() - self.started < 1.5 else 200
        elif self.path == "/empty":
            code = 204
        else:
            code = 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    Health.started = time.monotonic()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    """A loopback URL where nothing listens (the port was just released)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}/health"


def server_log(tmp_path: Path, name: str) -> Path:
    log = tmp_path / f"{name}.log"
    log.write_text("".join(f"{name} log line {i}\n" for i in range(1, 41)))
    return log


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_wait_healthy_reports_each_state_and_fails_only_the_dead_server(shell, userland, health_server, tmp_path):
    dead_log = server_log(tmp_path, "dead")
    specs = [
        f"ready|{health_server}/ok|20|{server_log(tmp_path, 'ready')}",
        f"loading|{health_server}/loading|20|{server_log(tmp_path, 'loading')}",
        f"api|{health_server}/empty|20|{server_log(tmp_path, 'api')}|http",
        f"dead|{closed_port_url()}|2|{dead_log}",
    ]
    result = run(shell, userland, [str(WAIT), *specs])
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert f"[health] ready: healthy ({health_server}/ok)" in out
    assert f"[health] loading: loading ({health_server}/loading)" in out
    assert out.index("[health] loading: loading") < out.index("[health] loading: healthy")
    assert f"[health] api: healthy ({health_server}/empty)" in out
    assert f"[health] dead: FAILED, not healthy in time (last: down). Last lines of {dead_log}:" in out
    assert "[health]   dead log line 40" in out and "[health]   dead log line 11" in out
    assert "dead log line 10\n" not in out
    assert out.rstrip().endswith("[health] not healthy: dead")


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_wait_healthy_expects_200_from_llama_server_not_any_2xx(shell, userland, health_server, tmp_path):
    spec = f"api|{health_server}/empty|1|{server_log(tmp_path, 'api')}"
    result = run(shell, userland, [str(WAIT), spec])
    assert result.returncode == 1 and "[health] api: down" in result.stdout, result.stdout


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_wait_healthy_fails_fast_when_the_supervisor_says_the_program_died(shell, userland, tmp_path):
    log = server_log(tmp_path, "crashing")
    marker = tmp_path / "supervisor-says-running"
    marker.touch()
    # CHECK may contain `|`: it is the rest of the spec.
    check = f"test -e {marker} || echo gone | grep -q nothing"
    spec = f"crashing|{closed_port_url()}|120|{log}|llama|{check}"
    threading.Timer(1.5, marker.unlink).start()
    started = time.monotonic()
    result = run(shell, userland, [str(WAIT), spec])
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[health] crashing: FAILED, exited while starting" in result.stdout
    assert "[health]   crashing log line 40" in result.stdout
    # Its deadline was 120 s away: the failure came from CHECK.
    assert elapsed < 30, elapsed


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_wait_healthy_refuses_a_malformed_spec(shell, userland):
    result = run(shell, userland, [str(WAIT), "q4|http://127.0.0.1:1/health|soon|/dev/null"])
    assert result.returncode == 2 and "TIMEOUT_S must be a number" in result.stderr


# --- model-fetch.sh and the ModelFileStates fact ---------------------------------

FAKE_HF = """#!/bin/sh
# Stands in for `hf download REPO FILE --revision REV --local-dir DIR --quiet`:
# records its arguments, leaves the file where hf would, like hf exits 0.
echo "$*" >>"$FAKE_HF_LOG"
[ -z "${FAKE_HF_FAIL:-}" ] || exit 1
file=$3 dir=$7
mkdir -p "$dir/$(dirname "$file")"
printf '%s' "$FAKE_HF_CONTENT" >"$dir/$file"
"""
CONTENT = "GGUF fake model weights\n" * 100
SHA = hashlib.sha256(CONTENT.encode()).hexdigest()
# Large enough that an interrupted download leaves a partial worth resuming.
BIG = b"GGUF" + hashlib.shake_256(b"kitty big model").digest(3_000_000 - 4)
BIG_SHA = hashlib.sha256(BIG).hexdigest()
TOKEN = "hf_fetchTOKEN0123456789"


class Hub(BaseHTTPRequestHandler):
    """A resolve URL that honours Range like the Hub's CDN; /html answers an error page with 200; /gone 404.

    `cut_after`: the first response to a GET of /big.gguf stops after that many
    bytes and drops the connection (a lost network). Every request is recorded.
    """

    files = {"/model.gguf": CONTENT.encode(), "/big.gguf": BIG}
    requests: list[dict] = []
    cut_after: int | None = None

    def do_HEAD(self):  # noqa: N802
        self._answer(head=True)

    def do_GET(self):  # noqa: N802
        self._answer(head=False)

    def _answer(self, head: bool):
        record = {"method": self.command, "path": self.path, "range": self.headers.get("Range"), "sent": 0}
        record["auth"] = self.headers.get("Authorization")
        Hub.requests.append(record)
        if self.path == "/html":
            body = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
                record["sent"] = len(body)
            return
        data = self.files.get(self.path)
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        if self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][6:].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.end_headers()
        if head:
            return
        body = data[start:]
        if Hub.cut_after is not None and self.path == "/big.gguf":
            body, Hub.cut_after = body[: Hub.cut_after], None
            self.wfile.write(body)
            record["sent"] = len(body)
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)
        record["sent"] = len(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    Hub.requests, Hub.cut_after = [], None
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake_hf(tmp_path) -> Path:
    hf = tmp_path / "bin" / "hf"
    hf.parent.mkdir()
    hf.write_text(FAKE_HF)
    hf.chmod(0o755)
    return hf


def fetch(shell, userland, models_dir, url, sha=SHA, size="-", file="model.gguf", **env):
    argv = [str(FETCH), str(models_dir), "smol", file, sha, str(size), "curl", url]
    return run(shell, userland, argv, env={"KITTY_PROGRESS_INTERVAL": "1", **env})


def fetch_with_hf(shell, userland, hf, models_dir, sha, content=CONTENT, **env):
    argv = [str(FETCH), str(models_dir), "smol", "model.gguf", sha, "-", "hf", str(hf), "org/smol", "0" * 40]
    fake = {"FAKE_HF_LOG": str(hf.parent / "calls"), "FAKE_HF_CONTENT": content, "KITTY_PROGRESS_INTERVAL": "1"}
    return run(shell, userland, argv, env={**fake, **env})


def file_state(shell, userland, models_dir, rel="smol/model.gguf") -> dict:
    """The ModelFileStates fact, its command run by the same shell and userland."""
    command = ModelFileStates().command(str(models_dir), [rel], full=True)
    result = run(shell, userland, ["-c", command])
    return ModelFileStates().process(result.stdout.splitlines())[rel]


def wanted(sha, name="model.gguf") -> models.Wanted:
    model = config.Model(repo="org/smol", revision="0" * 40, dir="smol", files=[{"name": name, "sha256": sha}])
    return models.Wanted("smol", model, model.files[0])


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_model_fetch_downloads_through_staging_and_stamps_what_the_fact_reads(shell, userland, hub, tmp_path):
    models_dir = tmp_path / "models"
    result = fetch(shell, userland, models_dir, f"{hub}/model.gguf", size=len(CONTENT))
    assert result.returncode == 0, result.stdout + result.stderr
    final = models_dir / "smol" / "model.gguf"
    assert final.read_text() == CONTENT
    assert not list((models_dir / ".kitty-staging" / "smol").iterdir())
    st = final.stat()
    assert (
        models_dir / "smol" / ".kitty" / "model.gguf.stamp"
    ).read_text() == f"{SHA} {st.st_size} {int(st.st_mtime)}\n"
    state = file_state(shell, userland, models_dir)
    assert state["sha256"] == SHA and models.is_verified(wanted(SHA), state, full=True)
    assert f"verified: sha256 {SHA}" in result.stdout


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_model_fetch_keeps_a_good_file_without_downloading(shell, userland, hub, tmp_path):
    final = tmp_path / "models" / "smol" / "model.gguf"
    final.parent.mkdir(parents=True)
    final.write_text(CONTENT)
    result = fetch(shell, userland, tmp_path / "models", f"{hub}/model.gguf")
    assert result.returncode == 0, result.stdout + result.stderr
    assert Hub.requests == [], "the hub was asked for a file already right"
    assert models.is_verified(wanted(SHA), file_state(shell, userland, tmp_path / "models"), full=False)


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_model_fetch_replaces_a_corrupt_file_and_never_stamps_it_good(shell, userland, hub, tmp_path):
    # What full verify hands over for a file with no pin: the hash its stamp recorded when first verified.
    final = tmp_path / "models" / "smol" / "model.gguf"
    final.parent.mkdir(parents=True)
    final.write_text(CONTENT.replace("weights", "wEights", 1))
    result = fetch(shell, userland, tmp_path / "models", f"{hub}/model.gguf")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"CORRUPT: sha256 {hashlib.sha256(final.read_bytes()).hexdigest()}" not in result.stdout
    assert "CORRUPT: sha256" in result.stdout and "fetching it again" in result.stdout
    assert final.read_text() == CONTENT
    assert file_state(shell, userland, tmp_path / "models")["stamp"]["sha256"] == SHA


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_model_fetch_refuses_a_wrong_hash_and_leaves_the_old_file(shell, userland, hub, tmp_path):
    final = tmp_path / "models" / "smol" / "model.gguf"
    final.parent.mkdir(parents=True)
    final.write_text("the old file\n")
    result = fetch(shell, userland, tmp_path / "models", f"{hub}/model.gguf", sha="0" * 64)
    assert result.returncode == 1
    assert f"sha256 mismatch for smol/model.gguf: expected {'0' * 64}, got {SHA}" in result.stderr
    assert final.read_text() == "the old file\n"
    assert not list((tmp_path / "models" / ".kitty-staging" / "smol").iterdir())
    assert not (tmp_path / "models" / "smol" / ".kitty" / "model.gguf.stamp").exists()


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_model_fetch_rejects_what_is_not_a_gguf_file(shell, userland, hub, tmp_path):
    result = fetch(shell, userland, tmp_path / "models", f"{hub}/html", sha="-")
    assert result.returncode == 1
    assert "the download is not a GGUF file (it starts with '<!DOCTYPE html>" in result.stderr
    assert not (tmp_path / "models" / "smol" / "model.gguf").exists()
    assert not list((tmp_path / "models" / ".kitty-staging" / "smol").iterdir())


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_model_fetch_resumes_a_download_cut_off_midway(shell, userland, hub, tmp_path):
    models_dir, url = tmp_path / "models", f"{hub}/big.gguf"
    Hub.cut_after = 1_000_000
    first = fetch(shell, userland, models_dir, url, sha=BIG_SHA, size=len(BIG), file="big.gguf")
    assert first.returncode == 1 and "(kept: the next converge resumes)" in first.stderr, first.stdout
    part = models_dir / ".kitty-staging" / "smol" / "big.gguf.part"
    assert part.stat().st_size == 1_000_000
    assert file_state(shell, userland, models_dir, "smol/big.gguf")["partial"] == 1_000_000
    second = fetch(shell, userland, models_dir, url, sha=BIG_SHA, size=len(BIG), file="big.gguf")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming at 976.6 KiB" in second.stdout
    assert (models_dir / "smol" / "big.gguf").read_bytes() == BIG
    gets = [r for r in Hub.requests if r["method"] == "GET"]
    assert [r["range"] for r in gets] == [None, "bytes=1000000-"]
    assert sum(r["sent"] for r in gets) == len(BIG)


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_model_fetch_discards_a_partial_of_another_source(shell, userland, hub, tmp_path):
    models_dir = tmp_path / "models"
    part = models_dir / ".kitty-staging" / "smol" / "big.gguf.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(BIG[:500_000])
    # Left by a download of another commit.
    (part.parent / "big.gguf.part.source").write_text(f"{hub}/resolve/other/big.gguf {len(BIG)} {BIG_SHA}\n")
    result = fetch(shell, userland, models_dir, f"{hub}/big.gguf", sha=BIG_SHA, size=len(BIG), file="big.gguf")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "discarding a partial download of another source" in result.stdout
    assert [r["range"] for r in Hub.requests if r["method"] == "GET"] == [None]


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_model_fetch_sends_the_token_from_its_header_file_only(shell, userland, hub, tmp_path):
    header = tmp_path / "auth-header"
    header.write_text(f"Authorization: Bearer {TOKEN}\n")
    header.chmod(0o600)
    result = fetch(shell, userland, tmp_path / "models", f"{hub}/model.gguf", KITTY_AUTH_HEADER_FILE=str(header))
    assert result.returncode == 0, result.stdout + result.stderr
    assert [r["auth"] for r in Hub.requests] == [f"Bearer {TOKEN}"]
    assert TOKEN not in result.stdout + result.stderr


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_model_fetch_names_a_failed_download(shell, userland, hub, tmp_path):
    result = fetch(shell, userland, tmp_path / "models", f"{hub}/gone.gguf")
    assert result.returncode == 1 and "FAILED: curl exited 22" in result.stderr


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_model_fetch_with_hf_still_downloads_checks_and_stamps(shell, userland, fake_hf, tmp_path):
    result = fetch_with_hf(shell, userland, fake_hf, tmp_path / "models", SHA)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "models" / "smol" / "model.gguf").read_text() == CONTENT
    failed = fetch_with_hf(shell, userland, fake_hf, tmp_path / "other", SHA, FAKE_HF_FAIL="1")
    assert failed.returncode == 1 and "hf download exited non-zero" in failed.stderr


# --- llama-build.sh, and the LlamaCppBuilds and GitRemoteRef facts -----------------

FAKE_CMAKE = """#!/bin/sh
# Stands in for cmake: configure records its arguments; --build makes a
# llama-server that prints the source's VERSION, or fails when asked to.
if [ "$1" = --build ]; then
    work=$2
    echo "[ 10%] Building C object ggml.c.o"
    if [ -n "${FAKE_CMAKE_FAIL:-}" ]; then echo "ggml.c:1: error: broken on purpose"; exit 2; fi
    echo "[100%] Linking CXX executable bin/llama-server"
    mkdir -p "$work/bin"
    printf '#!/bin/sh\\necho "version: 1 (%s)"\\n' "$(cat "$(cat "$work/source")/VERSION")" >"$work/bin/llama-server"
    chmod 755 "$work/bin/llama-server"
    exit 0
fi
mkdir -p "$4"
echo "$2" >"$4/source"
echo "$*" >"$4/configured"
"""


def git(*args, cwd=None):
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
    ident = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=master"]
    return subprocess.run(["git", *ident, *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)


@pytest.fixture
def upstream(tmp_path) -> tuple[Path, dict]:
    """A bare repository with an annotated tag b1 on commit `one`, and a commit `two` not tagged yet."""
    work, bare = tmp_path / "work", tmp_path / "upstream.git"
    git("init", "-q", str(work))
    commits = {}
    for name in ("one", "two"):
        (work / "VERSION").write_text(name)
        git("add", "VERSION", cwd=work)
        git("commit", "-q", "-m", name, cwd=work)
        commits[name] = git("rev-parse", "HEAD", cwd=work).stdout.strip()
    git("tag", "-a", "b1", "-m", "b1", commits["one"], cwd=work)
    git("clone", "-q", "--bare", str(work), str(bare))
    return bare, commits


def build(shell, userland, root, url, build_id, commit, **env):
    argv = [str(BUILD), str(root), url, str(root / "logs"), "2", "llama-server", build_id, "b1", commit, "-DX=1"]
    return run(shell, userland, argv, env=env)


def ref_fact(shell, userland, url) -> dict:
    result = run(shell, userland, ["-c", GitRemoteRef().command(url, "b1")])
    return GitRemoteRef().process(result.stdout.splitlines())


def builds_fact(shell, userland, root) -> dict:
    result = run(shell, userland, ["-c", LlamaCppBuilds().command(str(root))])
    return LlamaCppBuilds().process(result.stdout.splitlines())


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_llama_build_builds_the_commit_and_rebuilds_a_tag_moved_upstream(shell, userland, upstream, tmp_path):
    bare, commits = upstream
    url, root = f"file://{bare}", tmp_path / "llama.cpp"
    assert ref_fact(shell, userland, url) == {"reachable": True, "commit": commits["one"]}  # peeled, not the tag
    first = build(shell, userland, root, url, "b1-one", commits["one"])
    assert first.returncode == 0, first.stdout + first.stderr
    recorded = json.loads((root / "builds" / "b1-one" / "build.json").read_text())
    assert recorded == {"ref": "b1", "commit": commits["one"], "cmake_args": "-DX=1"}
    assert "[llama.cpp b1-one]   100%" in first.stdout

    # The tag is re-pointed upstream; the clone under root still has the old one.
    git("tag", "-f", "-a", "b1", "-m", "b1 again", commits["two"], cwd=bare)
    assert ref_fact(shell, userland, url)["commit"] == commits["two"]
    second = build(shell, userland, root, url, "b1-two", commits["two"])
    assert second.returncode == 0, second.stdout + second.stderr
    version = subprocess.run([root / "builds" / "b1-two" / "bin" / "llama-server"], capture_output=True, text=True)
    assert version.stdout == "version: 1 (two)\n"
    (root / "current").symlink_to(root / "builds" / "b1-two")
    facts = builds_fact(shell, userland, root)
    assert facts["current"] == "b1-two" and set(facts["builds"]) == {("b1-one", True), ("b1-two", True)}
    assert facts["commits"] == {"b1-one": commits["one"], "b1-two": commits["two"]}


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_llama_build_failure_names_the_step_and_keeps_nothing(shell, userland, upstream, tmp_path):
    bare, commits = upstream
    root = tmp_path / "llama.cpp"
    result = build(shell, userland, root, f"file://{bare}", "b1-one", commits["one"], FAKE_CMAKE_FAIL="1")
    assert result.returncode != 0
    assert "[llama.cpp b1-one] FAILED during: compile llama-server" in result.stdout
    assert "[llama.cpp b1-one]   ggml.c:1: error: broken on purpose" in result.stdout
    assert not (root / "builds" / "b1-one").exists() and not (root / "builds" / ".b1-one.partial").exists()


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_llama_build_refuses_a_commit_the_server_does_not_have(shell, userland, upstream, tmp_path):
    bare, _ = upstream
    result = build(shell, userland, tmp_path / "llama.cpp", f"file://{bare}", "b1-x", "f" * 40)
    assert result.returncode != 0
    assert "FAILED during: fetch b1" in result.stdout and f"has no commit {'f' * 40}" in result.stdout


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_ref_fact_says_unreachable_for_a_missing_server(shell, userland, tmp_path):
    fact = ref_fact(shell, userland, f"file://{tmp_path}/nothing.git")
    assert fact["reachable"] is False and "does not appear to be a git repository" in fact["error"]
