"""Log rotation: logrotate on Linux (copytruncate: llama-server cannot reopen its log), newsyslog on macOS."""

from __future__ import annotations

import pytest

from tasks import config
from tasks.engine import host_file
from tasks.system import logs
from tests.plan import hosts
from tests.plan.harness import plan, simulated_platform

CFG = config.load(hosts.DEFAULTS)
LINUX = simulated_platform("linux", "admin", "x86_64")
MAC = simulated_platform("macos", "admin", "arm64")


def small(**settings) -> dict:
    return {**hosts.DEFAULTS, "kitty_logs": {"max_size_mb": 10, "keep": 3, **settings}}


def test_logrotate_copies_then_truncates_by_size_and_never_signals():
    text = logs.render(config.load(small()), LINUX)
    block = text[text.index(f"{CFG.paths.logs_dir}/*.log {{") :]
    directives = [line.strip() for line in block.splitlines()[1:] if line.strip() and line.strip() != "}"]
    assert directives == ["size 10M", "rotate 3", "copytruncate", "compress", "missingok", "notifempty"]
    # A signal would end llama-server (it handles only SIGINT and SIGTERM).
    assert "postrotate" not in text and "kill" not in text


def test_newsyslog_line_has_size_in_kilobytes_count_and_no_signal_nor_compression():
    text = logs.render(config.load(small()), MAC)
    (line,) = [line for line in text.splitlines() if line and not line.startswith("#")]
    name, owner, mode, count, size, when, flags = line.split()
    assert (name, mode, count, size, when) == (f"{CFG.paths.logs_dir}/*.log", "644", "3", "10240", "*")
    # G: a pattern; N: signal no one. No J/Z/X: a job keeps writing to the rotated file.
    assert sorted(flags) == ["G", "N"]
    # The new log is the admin's, not root:wheel: launchd opens it as the job's user (issue 25, defect 4).
    assert owner == "admin:"


def test_newsyslog_lets_the_service_account_write_the_new_log_through_its_group():
    data = {**small(), "kitty_paths": {**hosts.DEFAULTS["kitty_paths"], "service_user": "kitty"}}
    text = logs.render(config.load(data), MAC, group="kitty")
    (line,) = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert line.split()[1:3] == ["admin:kitty", "664"]


@pytest.mark.parametrize("os", ["macos", "linux"])
def test_a_converged_host_plans_nothing_and_a_new_size_rewrites_only_the_config(os):
    facts = hosts.macos_converged() if os == "macos" else hosts.linux_converged()
    name = f"Rotate the KITTY logs ({'newsyslog' if os == 'macos' else 'logrotate'})"
    assert name not in [op.name for op in plan(facts).ops]
    changed = {op.name: op for op in plan(facts, data={"kitty_logs": {"max_size_mb": 7, "keep": 5}}).ops}
    path = logs.NEWSYSLOG_CONF if os == "macos" else logs.LOGROTATE_CONF
    (command,) = changed[name].commands
    assert command.startswith("FileUploadCommand(") and command.endswith(f", {path})")


def test_a_fresh_linux_host_writes_the_config_root_owned():
    ops = {op.name: op for op in plan(hosts.linux(installed=hosts.APT_PACKAGES)).ops}
    commands = ops["Rotate the KITTY logs (logrotate)"].commands
    assert commands[0] == host_file.folder_command("/etc/logrotate.d", "root")
    assert commands[2:] == [f"chmod 644 {logs.LOGROTATE_CONF}", f"chown root {logs.LOGROTATE_CONF}"]


def test_logrotate_is_a_prerequisite_and_installed_even_when_the_package_list_drops_it():
    assert "logrotate" in CFG.packages.apt
    data = {"kitty_packages": {**hosts.DEFAULTS["kitty_packages"], "apt": ["git"]}}
    names = [op.name for op in plan(hosts.linux(installed=["git"]), data=data).ops]
    assert "Install logrotate" in names
