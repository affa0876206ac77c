#!/usr/bin/env python3
"""A "fresh host" for kitty-ops tests: a systemd + sshd Debian container on this machine.

    sandbox.py build                                  image kitty-sandbox:<hash of inputs>
    sandbox.py start [--name N] [--ssh-port P] [--replace] [--network NET]
    sandbox.py restart [--name N]                     docker restart, wait for SSH again
    sandbox.py stop [--name N]                        remove the container and .sandbox/N
    sandbox.py check [--name N] [--network]           systemd state, sudo, (apt + HTTPS)
    sandbox.py env [--name N]                         print the KITTY_* lines

`start` writes .sandbox/N/env with KITTY_HOSTS, KITTY_SSH_KEY, KITTY_SSH_KNOWN_HOSTS.
A sandbox shares this machine's network (sshd on 127.0.0.1:P) unless `--network NET` puts
it on a Docker network the caller created: then it is a host of its own at its address
there (sshd on port 22), and it reaches this machine at the network's gateway address
(KITTY_SANDBOX_ADDRESS and KITTY_SANDBOX_GATEWAY in its env file).
No registry is reachable: the image comes from debootstrap + `docker import`, then a
local `docker build` (sandbox/image/Dockerfile) on top of it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE_DIR = ROOT / "sandbox" / "image"
STATE = ROOT / ".sandbox"
CACHE = STATE / "cache"
MIRRORS = STATE / "mirrors"
# One compiler cache for every sandbox: a fresh sandbox rebuilds llama.cpp from
# cache hits instead of from scratch (sandbox/group_data sets kitty_llamacpp.ccache_dir).
CCACHE = STATE / "ccache"

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = sorted(
    [
        "systemd",
        "systemd-sysv",
        "dbus",
        "openssh-server",
        "python3",
        "sudo",
        "curl",
        "ca-certificates",
        "iproute2",
        "procps",
    ]
)
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DOCKER_SOCKET = "/var/run/docker.sock"
LABEL = "kitty-ops.sandbox"
IMAGE_REPO = "kitty-sandbox"
DEFAULT_NAME = "kitty-sb"
DEFAULT_PORT = 2222
SSHD_CONF = "/etc/ssh/sshd_config.d/50-sandbox.conf"


class Fail(Exception):
    pass


def log(msg: str) -> None:
    print(f"[sandbox] {msg}", file=sys.stderr, flush=True)


def run(
    *cmd: str, check: bool = True, capture: bool = True, input: str | None = None, timeout: float | None = None
) -> subprocess.CompletedProcess:
    p = subprocess.run(
        cmd,
        text=True,
        input=input,
        timeout=timeout,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )
    if check and p.returncode != 0:
        detail = (p.stderr or p.stdout or "").strip() if capture else ""
        raise Fail(f"command failed ({p.returncode}): {' '.join(cmd)}\n{detail}")
    return p


def docker(*args: str, **kw) -> subprocess.CompletedProcess:
    return run("docker", *args, **kw)


def image_exists(ref: str) -> bool:
    return docker("image", "inspect", ref, check=False).returncode == 0


@contextlib.contextmanager
def build_lock():
    # Parallel test runs may all call `start`: only one of them builds.
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------- build


def base_key() -> str:
    """What the debootstrap tarball depends on: a script change alone must not re-debootstrap."""
    spec = f"{SUITE}\n{MIRROR}\nminbase\n{','.join(PACKAGES)}\n"
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def image_tag() -> str:
    h = hashlib.sha256(base_key().encode())
    for path in sorted(p for p in IMAGE_DIR.rglob("*") if p.is_file()):
        rel = path.relative_to(IMAGE_DIR).as_posix()
        h.update(f"{rel}\0{os.access(path, os.X_OK)}\0".encode())
        h.update(path.read_bytes())
    h.update(HOST_CA_BUNDLE.read_bytes())
    return f"{IMAGE_REPO}:{h.hexdigest()[:12]}"


def debootstrap_tarball() -> Path:
    tarball = CACHE / f"rootfs-{SUITE}-{base_key()}.tar"
    if tarball.exists():
        return tarball
    if not shutil.which("debootstrap"):
        raise Fail("debootstrap is missing: run .ci/start-docker.sh (or apt-get install debootstrap)")
    for stale in CACHE.glob("rootfs.*"):  # left by an interrupted run (we hold the build lock)
        shutil.rmtree(stale, ignore_errors=True)
    t0 = time.monotonic()
    log(f"debootstrap {SUITE} from {MIRROR} (75-160 s) ...")
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs.") as tmp:
        rootfs = Path(tmp) / "rootfs"
        p = run(
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(rootfs),
            MIRROR,
            check=False,
        )
        if p.returncode != 0:
            tail = "\n".join((p.stdout + p.stderr).splitlines()[-20:])
            logfile = rootfs / "debootstrap" / "debootstrap.log"
            if logfile.exists():
                tail += "\n--- debootstrap.log ---\n" + "\n".join(logfile.read_text().splitlines()[-20:])
            raise Fail(f"debootstrap failed ({p.returncode}):\n{tail}")
        for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        partial = tarball.with_suffix(".tar.partial")
        run("tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), ".")
        partial.rename(tarball)
    log(
        f"debootstrap done in {time.monotonic() - t0:.1f}s: {tarball.relative_to(ROOT)}"
        f" ({tarball.stat().st_size / 1e6:.0f} MB)"
    )
    return tarball


def build() -> str:
    """Return the image for the current inputs, building what is missing."""
    tag = image_tag()
    if image_exists(tag):
        return tag
    with build_lock():
        if image_exists(tag):  # someone else built it while we waited
            return tag
        t0 = time.monotonic()
        base = f"{IMAGE_REPO}-base:{base_key()}"
        if not image_exists(base):
            tarball = debootstrap_tarball()
            t1 = time.monotonic()
            log(f"docker import {base} ...")
            docker("import", str(tarball), base)
            log(f"imported in {time.monotonic() - t1:.1f}s")
        log(f"docker build {tag} ...")
        with tempfile.TemporaryDirectory(prefix="kitty-sandbox-ctx.") as ctx:
            shutil.copytree(IMAGE_DIR, ctx, dirs_exist_ok=True)
            shutil.copyfile(HOST_CA_BUNDLE, Path(ctx) / "host-ca-bundle.crt")
            # The legacy builder needs no buildx plugin (absent on this engine 20.10 setup).
            env = dict(os.environ, DOCKER_BUILDKIT="0")
            p = subprocess.run(
                ["docker", "build", "-q", "--build-arg", f"BASE={base}", "--label", f"{LABEL}=1", "-t", tag, ctx],
                text=True,
                capture_output=True,
                env=env,
            )
            if p.returncode != 0:
                raise Fail(f"docker build failed:\n{p.stdout[-3000:]}{p.stderr[-3000:]}")
        size = int(docker("image", "inspect", "-f", "{{.Size}}", tag).stdout)
        log(f"built {tag} in {time.monotonic() - t0:.1f}s ({size / 1e6:.0f} MB)")
        prune_images(keep={tag, base})
    return tag


def prune_images(keep: set[str]) -> None:
    """Drop images of older inputs; docker refuses (and we ignore) those a container still uses."""
    for repo in (IMAGE_REPO, f"{IMAGE_REPO}-base"):
        for ref in docker("images", "--format", "{{.Repository}}:{{.Tag}}", repo).stdout.split():
            if ref not in keep:
                docker("rmi", ref, check=False)


# ---------------------------------------------------------------- containers


def container_state(name: str) -> tuple[bool, bool, bool] | None:
    """(exists, running, ours) or None when no container has that name."""
    p = docker(
        "container",
        "inspect",
        "-f",
        f'{{{{.State.Running}}}} {{{{index .Config.Labels "{LABEL}"}}}}',
        name,
        check=False,
    )
    if p.returncode != 0:
        return None
    running, label = (p.stdout.split() + [""])[:2]
    return True, running == "true", label == "1"


def remove_container(name: str) -> None:
    state = container_state(name)
    if state is None:
        return
    if not state[2]:
        raise Fail(f"container {name!r} was not created by sandbox.py (no {LABEL} label): not touching it")
    docker("rm", "-f", "-v", name)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR: only a listener blocks the bind, not connections in TIME_WAIT
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def paths(name: str) -> dict[str, Path]:
    d = STATE / name
    return {
        "dir": d,
        "key": d / "id_ed25519",
        "known_hosts": d / "known_hosts",
        "env": d / "env",
        "port": d / "port",
        "ssh_config": d / "ssh_config",
        # Written only for a sandbox on a Docker network: its address there, and the gateway's.
        "address": d / "address",
        "gateway": d / "gateway",
        "sshd_network": d / "sshd-network.conf",
    }


def address_of(name: str) -> str:
    """Where SSH reaches the sandbox: this machine's loopback, or its address on its network."""
    path = paths(name)["address"]
    return path.read_text().strip() if path.exists() else "127.0.0.1"


def ssh_base(name: str, port: int, strict: bool) -> list[str]:
    p = paths(name)
    opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes"]
    if strict:
        opts += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={p['known_hosts']}"]
    else:
        opts += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    return ["ssh", "-i", str(p["key"]), "-p", str(port), *opts, f"admin@{address_of(name)}"]


def diagnostics(name: str) -> str:
    logs = docker("logs", "--tail", "30", name, check=False)
    out = ["--- docker logs (tail) ---", logs.stdout + logs.stderr]
    if (container_state(name) or (0, 0, 0))[1]:
        for cmd in (
            ["systemctl", "--failed", "--no-legend"],
            ["journalctl", "-b", "-u", "sandbox-init", "-u", "ssh", "-n", "20", "--no-pager"],
        ):
            p = docker("exec", name, *cmd, check=False)
            out += [f"--- {' '.join(cmd)} ---", p.stdout + p.stderr]
    else:
        out.append("(container is not running)")
    return "\n".join(out)


def wait_for_ssh(name: str, port: int, timeout: float) -> float:
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < timeout:
        state = container_state(name)
        if not state or not state[1]:
            raise Fail(f"container {name!r} stopped while waiting for SSH\n{diagnostics(name)}")
        p = run(*ssh_base(name, port, strict=False), "true", check=False, timeout=15)
        if p.returncode == 0:
            return time.monotonic() - t0
        last = p.stderr.strip()
        time.sleep(0.2)
    raise Fail(
        f"SSH on {address_of(name)}:{port} did not accept the key within {timeout:.0f}s "
        f"(last error: {last})\n{diagnostics(name)}"
    )


def system_state(name: str, port: int) -> tuple[str, str]:
    """Wait for boot to finish; return (state, failed units)."""
    ssh = ssh_base(name, port, strict=True)
    state = run(*ssh, "systemctl is-system-running --wait", check=False, timeout=120).stdout.strip()
    failed = ""
    if state != "running":
        failed = run(*ssh, "systemctl --failed --no-legend --plain", check=False).stdout.strip()
    return state, failed


def report_state(name: str, port: int) -> str:
    state, failed = system_state(name, port)
    if state != "running":
        log(f"WARNING: systemctl is-system-running: {state}; failed units:\n{failed or '(none listed)'}")
    return state


def env_lines(name: str) -> list[str]:
    p = paths(name)
    port = int(p["port"].read_text())
    lines = [
        f"KITTY_HOSTS=admin@{address_of(name)}:{port}",
        f"KITTY_SSH_KEY={p['key']}",
        f"KITTY_SSH_KNOWN_HOSTS={p['known_hosts']}",
    ]
    if p["address"].exists():
        lines += [
            f"KITTY_SANDBOX_ADDRESS={address_of(name)}",
            f"KITTY_SANDBOX_GATEWAY={p['gateway'].read_text().strip()}",
        ]
    return lines


def network_addresses(name: str, network: str) -> tuple[str, str]:
    """(the container's address, the gateway's) on `network`."""
    fmt = f'{{{{with index .NetworkSettings.Networks "{network}"}}}}{{{{.IPAddress}}}} {{{{.Gateway}}}}{{{{end}}}}'
    found = docker("container", "inspect", "-f", fmt, name).stdout.split()
    if len(found) != 2:
        raise Fail(f"container {name!r} has no address on network {network!r}")
    return found[0], found[1]


def start(name: str, port: int, replace: bool, timeout: float, network: str | None = None) -> None:
    state = container_state(name)
    if state and state[1] and not replace:
        raise Fail(f"container {name!r} is already running: use --replace, or `sandbox.py stop --name {name}`")
    if state:
        remove_container(name)  # refuses containers that are not ours
    if network is not None:
        # Its own address: sshd on the standard port, nothing shared with this machine's ports.
        port = 22
        if docker("network", "inspect", network, check=False).returncode != 0:
            raise Fail(f"no Docker network {network!r}: create it first (`docker network create {network}`)")
    elif not port_free(port):
        raise Fail(
            f"127.0.0.1:{port} is already in use (the sandbox shares this machine's network): pick another --ssh-port"
        )
    image = build()

    p = paths(name)
    shutil.rmtree(p["dir"], ignore_errors=True)
    p["dir"].mkdir(parents=True)
    MIRRORS.mkdir(parents=True, exist_ok=True)
    CCACHE.mkdir(parents=True, exist_ok=True)
    # The sandbox's admin (another uid) writes the cache.
    CCACHE.chmod(0o1777)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"admin@{name}", "-f", str(p["key"]))
    p["port"].write_text(f"{port}\n")
    if network is None:
        where = [
            # host network: sshd and test services share this machine's loopback
            "--network",
            "host",
            "-e",
            f"SANDBOX_SSH_PORT={port}",
        ]
    else:
        # The image's sshd listens on loopback only (right on the host's network). Here the
        # container's own addresses are its loopback and its address on `network`: its sshd
        # settings, listening on both, replace the image's file (no image rebuild).
        image_conf = (IMAGE_DIR / "rootfs" / SSHD_CONF.lstrip("/")).read_text()
        if "ListenAddress 127.0.0.1\n" not in image_conf:
            raise Fail(f"{SSHD_CONF} in the image no longer says `ListenAddress 127.0.0.1`: update sandbox.py")
        p["sshd_network"].write_text(image_conf.replace("ListenAddress 127.0.0.1\n", "ListenAddress 0.0.0.0\n"))
        where = ["--network", network, "-v", f"{p['sshd_network']}:{SSHD_CONF}:ro"]

    t0 = time.monotonic()
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--label",
        f"{LABEL}=1",
        "--label",
        f"{LABEL}.name={name}",
        # systemd as PID 1 without --privileged (the engine lacks CAP_SYS_RESOURCE)
        "--cap-add",
        "ALL",
        "--cap-drop",
        "SYS_RESOURCE",
        "--security-opt",
        "seccomp=unconfined",
        "--cgroupns=host",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "--tmpfs",
        "/run",
        "--tmpfs",
        "/run/lock",
        "--stop-signal",
        "SIGRTMIN+3",
        *where,
        # the deploy drives `docker compose` on the outer engine
        "-v",
        f"{DOCKER_SOCKET}:/var/run/docker.sock",
        "-v",
        f"{MIRRORS}:/srv/mirrors:ro",
        "-v",
        f"{CCACHE}:/var/cache/kitty-ccache",
        image,
    )
    pub = (p["key"].with_suffix(".pub")).read_text()
    # Per-sandbox key, installed after start so it is never part of the image.
    # Admin joins a group owning the outer engine's socket, like a docker user on a real host.
    sock_gid = os.stat(DOCKER_SOCKET).st_gid if os.path.exists(DOCKER_SOCKET) else ""
    docker(
        "exec",
        "-i",
        "-e",
        f"SOCK_GID={sock_gid}",
        name,
        "sh",
        "-euc",
        """
        umask 077
        cat > /home/admin/.ssh/authorized_keys
        chown admin:admin /home/admin/.ssh/authorized_keys
        if [ -n "$SOCK_GID" ] && [ "$SOCK_GID" != 0 ]; then
            getent group "$SOCK_GID" >/dev/null || groupadd -g "$SOCK_GID" docker
            usermod -aG "$(getent group "$SOCK_GID" | cut -d: -f1)" admin
        fi
    """,
        input=pub,
    )
    if network is not None:
        address, gateway = network_addresses(name, network)
        p["address"].write_text(f"{address}\n")
        p["gateway"].write_text(f"{gateway}\n")
    took = wait_for_ssh(name, port, timeout)
    log(f"SSH accepts the key {time.monotonic() - t0:.1f}s after docker run (waited {took:.1f}s)")

    address = address_of(name)
    keys = run("ssh-keyscan", "-p", str(port), "-T", "5", address).stdout
    if not keys.strip():
        raise Fail("ssh-keyscan returned no host keys")
    p["known_hosts"].write_text(keys)
    # For plain ssh and testinfra's ssh backend (which ignores --ssh-extra-args):
    # `ssh -F .sandbox/N/ssh_config N`, `--hosts=ssh://N --ssh-config=.sandbox/N/ssh_config`
    p["ssh_config"].write_text(
        f"Host {name}\n  HostName {address}\n  Port {port}\n  User admin\n"
        f"  IdentityFile {p['key']}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {p['known_hosts']}\n  StrictHostKeyChecking yes\n"
    )
    report_state(name, port)
    lines = env_lines(name)
    p["env"].write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def restart(name: str, timeout: float) -> None:
    state = container_state(name)
    if not state or not state[2]:
        raise Fail(f"no sandbox named {name!r} (start one first)")
    port = int(paths(name)["port"].read_text())
    t0 = time.monotonic()
    docker("restart", name)
    wait_for_ssh(name, port, timeout)
    log(f"restarted: SSH back after {time.monotonic() - t0:.1f}s")
    # same container, same host keys: the known_hosts from start must still match
    p = run(*ssh_base(name, port, strict=True), "true", check=False)
    if p.returncode != 0:
        raise Fail(f"host key changed across restart: {p.stderr.strip()}")
    report_state(name, port)


def stop(name: str) -> None:
    existed = container_state(name) is not None or paths(name)["dir"].exists()
    remove_container(name)
    shutil.rmtree(paths(name)["dir"], ignore_errors=True)
    log(f"removed {name}" if existed else f"no sandbox named {name!r}: nothing to do")


def check(name: str, network: bool) -> None:
    p = paths(name)
    if not p["port"].exists():
        raise Fail(f"no sandbox named {name!r} (start one first)")
    port = int(p["port"].read_text())
    ssh = ssh_base(name, port, strict=True)
    problems = []

    def probe(what: str, cmd: str, timeout: float = 120) -> None:
        t0 = time.monotonic()
        r = run(*ssh, cmd, check=False, timeout=timeout)
        ok = r.returncode == 0
        log(f"{'ok  ' if ok else 'FAIL'} {what} ({time.monotonic() - t0:.1f}s)")
        if not ok:
            problems.append(f"{what}: rc={r.returncode} {(r.stdout + r.stderr).strip()[-500:]}")

    state, failed = system_state(name, port)
    log(f"{'ok  ' if state == 'running' else 'FAIL'} systemctl is-system-running: {state}")
    if state != "running":
        problems.append(f"system {state}; failed units:\n{failed}")
    probe("sudo -n true", "sudo -n true")
    if not p["address"].exists():
        probe(
            "sshd on 127.0.0.1 only",
            f"! ss -Htln 'sport = :{port}' | awk '{{print $4}}' | grep -qv '^127[.]0[.]0[.]1:'",
        )
    probe("outer docker socket present", "test -S /var/run/docker.sock")
    if network:
        probe("apt-get update (plain HTTP)", "sudo -n apt-get -qq update")
        probe("HTTPS with the system CA bundle (curl)", "curl -fsS -o /dev/null https://pypi.org/simple/pip/")
        probe(
            "HTTPS with the system CA bundle (python)",
            "python3 -c \"import urllib.request as u; u.urlopen('https://pypi.org/simple/pip/', timeout=30)\"",
        )
    if problems:
        raise Fail("check failed:\n" + "\n".join(problems))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def named(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--name", default=DEFAULT_NAME)
        return p

    sub.add_parser("build", help="build the image if its inputs changed; print its tag")
    s = named(sub.add_parser("start", help="start a new sandbox and wait for SSH"))
    s.add_argument("--ssh-port", type=int, default=DEFAULT_PORT)
    s.add_argument("--replace", action="store_true", help="replace a running sandbox of that name")
    s.add_argument("--timeout", type=float, default=60, help="seconds to wait for SSH")
    s.add_argument(
        "--network", help="a Docker network (created by the caller) instead of the host's: SSH on its address, port 22"
    )
    r = named(sub.add_parser("restart", help="docker restart, then wait for SSH"))
    r.add_argument("--timeout", type=float, default=60)
    named(sub.add_parser("stop", help="remove the sandbox and its .sandbox/NAME state"))
    c = named(sub.add_parser("check", help="systemd state, sudo; --network: apt + HTTPS"))
    c.add_argument("--network", action="store_true")
    named(sub.add_parser("env", help="print the KITTY_* lines of a started sandbox"))
    a = ap.parse_args(argv)

    if getattr(a, "name", None) and not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", a.name):
        ap.error(f"bad --name {a.name!r}")
    try:
        if docker("version", "--format", "{{.Server.Version}}", check=False).returncode != 0:
            raise Fail("the docker engine does not answer: run .ci/start-docker.sh")
        if a.cmd == "build":
            print(build())
        elif a.cmd == "start":
            start(a.name, a.ssh_port, a.replace, a.timeout, a.network)
        elif a.cmd == "restart":
            restart(a.name, a.timeout)
        elif a.cmd == "stop":
            stop(a.name)
        elif a.cmd == "check":
            check(a.name, a.network)
        elif a.cmd == "env":
            if not paths(a.name)["env"].exists():
                raise Fail(f"no sandbox named {a.name!r} (start one first)")
            print(paths(a.name)["env"].read_text(), end="")
    except Fail as e:
        log(f"ERROR: {e}")
        return 1
    except subprocess.TimeoutExpired as e:
        log(f"ERROR: timed out: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
