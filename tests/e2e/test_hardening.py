"""Hardening on a real host (issue 18): the .env's symlink race, strict SSH host keys.

The secrets file is written by operations.secret_file through pyinfra over SSH with
real sudo, into a folder owned by a service account other than the deploying
admin, where that account plants a link to a root-owned file, before the run and
all through it. The link's target must come out untouched, and no copy of the
secrets may be left behind. Then the inventory's host-key rules: a host whose key
is unknown is refused; KITTY_ACCEPT_NEW_HOST_KEY=1 accepts it once, printing the
fingerprint.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import converge as sandbox_converge
from tests.e2e.conftest import ssh

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
OWNER = "kitty-svc"
FOLDER = "/srv/kitty-hardening"
DEST = f"{FOLDER}/.env"
TARGET = "/etc/kitty-hardening-target"
SECRET = "sk-hardening-5be0c2a91d"
DEPLOY = """
from pyinfra import host
from tasks.engine import operations

operations.secret_file(
    name="Write the secrets file as its owner",
    content=host.data.secret_content,
    dest=host.data.secret_dest,
    user=host.data.secret_owner,
    _sudo=True,
    _sudo_user=host.data.secret_owner,
)
"""


def pyinfra(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`pyinfra inventory.py ARGS -y` against the sandbox, as an operator runs it from a laptop."""
    full_env = {**os.environ, **sandbox_converge.sandbox_env(name), **sandbox_converge.QUIET_HF, **(env or {})}
    return subprocess.run([sys.executable, "-m", "pyinfra", "inventory.py", "-y", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def write_secret(name: str, tmp_path: Path, content: str) -> subprocess.CompletedProcess:
    deploy = tmp_path / "secret_file_deploy.py"
    deploy.write_text(DEPLOY)
    data = {"secret_content": content, "secret_dest": DEST, "secret_owner": OWNER}
    return pyinfra(name, str(deploy), *[arg for key, value in data.items() for arg in ("--data", f"{key}={value}")])


@pytest.fixture(scope="module")
def service_folder(sandbox):
    """A service account's folder (not the admin's), and a root-owned file its link will point at."""
    ssh(sandbox, f"id {OWNER} >/dev/null 2>&1 || sudo useradd --system --no-create-home {OWNER}")
    ssh(sandbox, f"sudo rm -rf {FOLDER} && sudo install -d -o {OWNER} -m 755 {FOLDER}")
    ssh(sandbox, f"printf 'root-owned, untouched\\n' | sudo tee {TARGET} >/dev/null && sudo chmod 644 {TARGET}")
    yield sandbox
    ssh(sandbox, f"sudo rm -rf {FOLDER} {TARGET}", check=False)


def target_state(name: str) -> str:
    return ssh(name, f"sudo stat -c '%U %G %a %s' {TARGET} && sudo sha256sum {TARGET}").stdout


def test_a_link_planted_before_the_run_is_replaced_and_its_target_untouched(service_folder, tmp_path):
    before = target_state(service_folder)
    ssh(service_folder, f"sudo -u {OWNER} ln -sfn {TARGET} {DEST}")
    done = write_secret(service_folder, tmp_path, f"API_KEY='{SECRET}'\n")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert target_state(service_folder) == before
    listing = ssh(service_folder, f"sudo stat -c '%F %U %a' {DEST}; sudo ls -A {FOLDER}").stdout.splitlines()
    assert listing == [f"regular file {OWNER} 600", ".env"]
    assert ssh(service_folder, f"sudo cat {DEST}").stdout == f"API_KEY='{SECRET}'\n"
    # Never in pyinfra's output, nor in a shared temporary file on the host.
    assert SECRET not in done.stdout + done.stderr
    assert ssh(service_folder, f"sudo grep -rl {SECRET} /tmp /var/tmp || true").stdout == ""


def test_a_link_raced_in_all_through_the_run_never_redirects_a_root_write(service_folder, tmp_path):
    """The service account swaps a link and a file at the .env many times a second while the deploy runs."""
    before = target_state(service_folder)
    # Detached from the SSH session (its own fds), so the ssh that starts it returns at once.
    racer = (
        f"( exec </dev/null >/dev/null 2>&1; cd {FOLDER} || exit 1; while :; do "
        f"ln -sfn {TARGET} .l && mv -f .l .env; echo decoy > .f && mv -f .f .env; done ) & echo $!"
    )
    pid = ssh(service_folder, f"sudo -u {OWNER} sh -c {shlex.quote(racer)} </dev/null").stdout.strip()
    assert pid.isdigit()
    try:
        for round_ in range(3):
            write_secret(service_folder, tmp_path, f"API_KEY='{SECRET}-{round_}'\n")
    finally:
        ssh(service_folder, f"sudo kill {pid}", check=False)
    assert target_state(service_folder) == before
    # Once the race stops, a run settles it: the owner's 0600 file, nothing else left in the folder.
    done = write_secret(service_folder, tmp_path, f"API_KEY='{SECRET}'\n")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    leftovers = ssh(service_folder, f"sudo find {FOLDER} -mindepth 1 -name '*kitty-new*'").stdout
    assert leftovers == ""
    expected = hashlib.sha256(f"API_KEY='{SECRET}'\n".encode()).hexdigest()
    assert ssh(service_folder, f"sudo sha256sum {DEST}").stdout.split()[0] == expected


def test_an_unknown_host_key_is_refused_and_accepting_it_is_explicit(service_folder, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    strict = pyinfra(service_folder, "exec", "--", "true", env={"KITTY_SSH_KNOWN_HOSTS": str(known_hosts)})
    assert strict.returncode != 0, "connected to a host whose key is not known"
    assert known_hosts.read_text() == ""
    accepted = pyinfra(
        service_folder,
        "exec",
        "--",
        "true",
        env={"KITTY_SSH_KNOWN_HOSTS": str(known_hosts), "KITTY_ACCEPT_NEW_HOST_KEY": "1"},
    )
    assert accepted.returncode == 0, accepted.stdout[-2000:] + accepted.stderr[-2000:]
    assert "accepting new host keys of [127.0.0.1]:" in accepted.stderr and "SHA256:" in accepted.stderr
    # The same key matches the sandbox's own known_hosts (written when it started).
    own = Path(sandbox_converge.sandbox_env(service_folder)["KITTY_SSH_KNOWN_HOSTS"]).read_text().split()
    assert any(word in own for word in known_hosts.read_text().split() if len(word) > 40)
