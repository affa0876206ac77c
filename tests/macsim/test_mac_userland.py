"""The simulated Mac's userland is as strict as a Mac's where kitty-ops relies on it.

Each test would have failed on the earlier, more lenient sim Mac: bash as the admin's
shell, passwordless sudo, newsyslog absent, a hostname that never changed.
"""

from __future__ import annotations

import shlex
import subprocess

import pytest

from sandbox.macsim import macsim

pytestmark = pytest.mark.e2e


def ssh(mac, command: str, input: str | None = None) -> subprocess.CompletedProcess:
    """A command over SSH as the admin, as pyinfra sends one (sshd runs it with the login shell)."""
    target = mac.target
    return subprocess.run(
        ["ssh", "-i", str(target.key), "-p", str(target.ssh_port), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={target.known_hosts}", "-o", "IdentitiesOnly=yes",
         "admin@127.0.0.1", command],
        text=True, input=input, capture_output=True, timeout=60,
    )  # fmt: skip


def test_the_admins_login_shell_is_zsh(simulated_mac):
    assert simulated_mac.check("getent passwd admin").strip().endswith(":/bin/zsh")
    p = ssh(simulated_mac, 'echo "${ZSH_VERSION:-not zsh}"')
    assert p.returncode == 0 and p.stdout.strip()[:1].isdigit(), p.stdout + p.stderr


def test_sudo_asks_for_the_password_and_askpass_gives_it(simulated_mac):
    refused = ssh(simulated_mac, "sudo -n true")
    assert refused.returncode != 0 and "password is required" in refused.stderr
    # What pyinfra's askpass helper does: a script that prints the password from the environment.
    askpass = "f=$(mktemp) && printf '#!/bin/sh\\necho \"$P\"\\n' > $f && chmod 700 $f && "
    accepted = ssh(simulated_mac, askpass + f"P={shlex.quote(macsim.ADMIN_PASSWORD)} SUDO_ASKPASS=$f sudo -A id -u")
    assert accepted.returncode == 0 and accepted.stdout.strip() == "0", accepted.stderr
    wrong = ssh(simulated_mac, askpass + "P=wrong SUDO_ASKPASS=$f sudo -A id -u")
    assert wrong.returncode != 0


def test_newsyslog_creates_root_owned_logs_unless_the_line_names_an_owner(simulated_mac):
    mac = simulated_mac
    mac.check("install -d -o admin /tmp/rot && for n in a b; do head -c 3000 /dev/zero > /tmp/rot/$n.log; done")
    mac.check("chown admin /tmp/rot/*.log")
    mac.check(
        "printf '%s\\n' '/tmp/rot/a.log\t644\t3\t1\t*\tN' '/tmp/rot/b.log\tadmin:admin\t644\t3\t1\t*\tN' "
        "> /tmp/rot.conf && newsyslog -f /tmp/rot.conf"
    )
    owners = mac.check("stat -f '%Su:%Sg %z' /tmp/rot/a.log /tmp/rot/b.log /tmp/rot/a.log.0").split("\n")
    assert owners[:3] == ["root:wheel 0", "admin:admin 0", "admin:wheel 3000"]
    # launchd opens a job's log as its UserName: the root-owned one cannot be opened for writing.
    assert mac.exec("echo more >> /tmp/rot/a.log", user="admin").returncode != 0
    assert mac.exec("echo more >> /tmp/rot/b.log", user="admin").returncode == 0
    assert mac.exec("newsyslog -f /tmp/rot.conf", user="admin").returncode != 0


def test_hostname_moves_with_the_network_and_local_host_name_stays(simulated_mac):
    before = ssh(simulated_mac, "hostname; uname -n; scutil --get LocalHostName").stdout.split()
    simulated_mac.new_network()
    after = ssh(simulated_mac, "hostname; uname -n; scutil --get LocalHostName").stdout.split()
    assert before[0] == before[1] and after[0] == after[1]
    assert before[0] != after[0]
    assert before[2] == after[2] == "kitty-studio"
