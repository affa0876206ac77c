#!/usr/bin/env python3
"""A simulated Mac: the sandbox image (Debian) dressed as macOS, reached over SSH as `admin`.

    python sandbox/macsim/macsim.py start [--name N] [--ssh-port P]
    python sandbox/macsim/macsim.py stop [--name N]

No systemd: sshd runs under docker's init, and sandbox/macsim/setup-mac.sh installs at
start the shims that make it answer like a Mac (launchctl, sysctl, pmset, BSD stat/sed/
date, uname Darwin arm64, Homebrew at /opt/homebrew, `hf`, lsof) and removes GNU-only
tools. The container has its own network namespace: its servers listen on its own
loopback; only SSH is published, on 127.0.0.1:<ssh port> of this machine.
The admin's login shell is zsh (its Debian packages are fetched once into
.sandbox/cache/macsim-debs and installed at start), and sudo asks for the admin's
password (ADMIN_PASSWORD): a run needs `--same-sudo-password`, as on a fresh Mac.
Key, known_hosts and port are written to .sandbox/macsim/<name>/.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STATE = ROOT / ".sandbox" / "macsim"
LABEL = "kitty-ops.macsim"
DEFAULT_NAME = "kitty-macsim"
# Clear of the sandboxes' 2222/2223 and of the test services' 8000-8300.
DEFAULT_PORT = 2230
# The admin's password on the simulated Mac: sudo asks for it (no NOPASSWD), as on a fresh Mac.
ADMIN_PASSWORD = "kitty-macsim-admin"
# The admin's login shell on macOS 10.15+; Debian packages it as zsh + zsh-common.
DEBS = STATE.parent / "cache" / "macsim-debs"
ZSH_PACKAGES = ("zsh", "zsh-common")


class Fail(Exception):
    pass


def run(
    *cmd: str, check: bool = True, input: str | None = None, timeout: float | None = 60
) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, text=True, input=input, capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        raise Fail(f"command failed ({p.returncode}): {' '.join(cmd)}\n{(p.stderr or p.stdout).strip()}")
    return p


@dataclass(frozen=True)
class Target:
    name: str
    ssh_port: int
    key: Path
    known_hosts: Path


def image() -> str:
    """The sandbox image of the current inputs (built, or waited for, by sandbox/sandbox.py)."""
    p = run(sys.executable, str(ROOT / "sandbox" / "sandbox.py"), "build", timeout=1800)
    return p.stdout.strip().splitlines()[-1]


def docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    return run("docker", "version", "--format", "{{.Server.Version}}", check=False, timeout=20).returncode == 0


def zsh_debs() -> Path:
    """A folder with zsh's Debian packages (downloaded once with apt; the sim Mac installs them at start)."""
    with_debs = DEBS / "zsh"
    if all(list(with_debs.glob(f"{name}_*.deb")) for name in ZSH_PACKAGES):
        return with_debs
    tmp = DEBS / f".zsh.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    p = subprocess.run(["apt-get", "download", *ZSH_PACKAGES], cwd=tmp, text=True, capture_output=True, timeout=300)
    if p.returncode != 0:
        run("apt-get", "update", "-qq", timeout=600)
        p = subprocess.run(["apt-get", "download", *ZSH_PACKAGES], cwd=tmp, text=True, capture_output=True, timeout=300)
    if p.returncode != 0:
        raise Fail(f"apt-get download {' '.join(ZSH_PACKAGES)} failed:\n{p.stderr.strip()}")
    shutil.rmtree(with_debs, ignore_errors=True)
    tmp.rename(with_debs)
    return with_debs


def remove(name: str) -> None:
    p = run("docker", "container", "inspect", "-f", f'{{{{index .Config.Labels "{LABEL}"}}}}', name, check=False)
    if p.returncode != 0:
        return
    if p.stdout.strip() != "1":
        raise Fail(f"container {name!r} was not created by macsim.py: not touching it")
    run("docker", "rm", "-f", "-v", name)


def start(name: str = DEFAULT_NAME, ssh_port: int = DEFAULT_PORT, timeout: float = 30) -> Target:
    remove(name)
    state = STATE / name
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    key = state / "id_ed25519"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"admin@{name}", "-f", str(key))
    # The image and zsh's packages first: on a fresh clone the first start builds the sandbox image
    # and downloads the packages (minutes), which the SSH wait below must not count.
    sandbox_image, debs = image(), zsh_debs()
    t0 = time.monotonic()
    run(
        "docker", "run", "-d", "--init",
        "--name", name,
        "--label", f"{LABEL}=1",
        "--hostname", "kitty-studio",
        "-p", f"127.0.0.1:{ssh_port}:22",
        "-v", f"{HERE}:/macsim:ro",
        "-v", f"{debs}:/macsim-debs:ro",
        "-e", f"MACSIM_ADMIN_PASSWORD={ADMIN_PASSWORD}",
        "--stop-signal", "SIGTERM",
        "--entrypoint", "/bin/sh",
        sandbox_image,
        "/macsim/setup-mac.sh",
    )  # fmt: skip
    run(
        "docker", "exec", "-i", name, "sh", "-euc",
        "umask 077; cat > /home/admin/.ssh/authorized_keys; chown admin:admin /home/admin/.ssh/authorized_keys",
        input=key.with_suffix(".pub").read_text(),
    )  # fmt: skip
    ssh = ["ssh", "-i", str(key), "-p", str(ssh_port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=3",
           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
           "-o", "IdentitiesOnly=yes", "admin@127.0.0.1", "true"]  # fmt: skip
    last = ""
    while True:
        p = run(*ssh, check=False, timeout=15)
        if p.returncode == 0:
            break
        last = p.stderr.strip()
        if time.monotonic() - t0 > timeout:
            logs = run("docker", "logs", "--tail", "30", name, check=False)
            raise Fail(f"SSH to {name} on 127.0.0.1:{ssh_port} failed ({last})\n{logs.stdout}{logs.stderr}")
        time.sleep(0.2)
    known_hosts = state / "known_hosts"
    keys = run("ssh-keyscan", "-p", str(ssh_port), "-T", "5", "127.0.0.1").stdout
    known_hosts.write_text(keys)
    (state / "port").write_text(f"{ssh_port}\n")
    print(
        f"[macsim] {name}: SSH on 127.0.0.1:{ssh_port} {time.monotonic() - t0:.1f}s after docker run", file=sys.stderr
    )
    return Target(name, ssh_port, key, known_hosts)


def stop(name: str = DEFAULT_NAME) -> None:
    remove(name)
    shutil.rmtree(STATE / name, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("--name", default=DEFAULT_NAME)
    s.add_argument("--ssh-port", type=int, default=DEFAULT_PORT)
    t = sub.add_parser("stop")
    t.add_argument("--name", default=DEFAULT_NAME)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "start":
            target = start(a.name, a.ssh_port)
            print(f"KITTY_HOSTS=admin@127.0.0.1:{target.ssh_port}")
            print(f"KITTY_SSH_KEY={target.key}")
            print(f"KITTY_SSH_KNOWN_HOSTS={target.known_hosts}")
        else:
            stop(a.name)
    except Fail as e:
        print(f"[macsim] ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
