"""The images service's units and plists, its config rules, and its shell snippets run for real on this machine."""

from __future__ import annotations

import hashlib
import plistlib
import shlex
import subprocess

import pytest

from tasks import config
from tasks.app import images
from tasks.host.platform import Platform
from tasks.supervise import launchd, systemd
from tests.unit.data import host_data

LINUX = Platform(os="linux", arch="x86_64", user="admin", sudo=True)
MAC = Platform(os="macos", arch="arm64", user="admin", sudo=True, brew_prefix="/opt/homebrew")
APP = "/Users/Shared/Coding/KITT/services/images_service"


def enabled(**changes) -> config.KittyConfig:
    return config.load(host_data(kitty_images__enabled=True, **changes))


def unit_lines(text: str) -> dict[str, list[str]]:
    """KEY=value lines of a unit, comments dropped; a key may repeat."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


# --- What runs ------------------------------------------------------------------------------------


def test_the_manuals_two_programs_with_the_redis_port_of_the_stack():
    worker, api = images.programs(enabled(kitty_stack__services__redis={"port": 6380, "health": "redis"}), LINUX)
    assert worker.argv == [f"{APP}/.venv/bin/rq", "worker", "images", "--url", "redis://127.0.0.1:6380/0"]
    assert api.argv == [f"{APP}/.venv/bin/uvicorn", "main:app", "--host", "127.0.0.1", "--port", "8089"]
    assert (worker.log, api.log) == (
        "/Users/Shared/Coding/KITT/.logs/rq_worker.log",
        "/Users/Shared/Coding/KITT/.logs/service.log",
    )


def test_a_unit_key_by_key():
    cfg = enabled(kitty_paths__service_user="kitty")
    worker, api = images.programs(cfg, LINUX)
    lines = unit_lines(systemd.render(worker))
    assert lines.pop("Description") == ["KITTY images service: RQ worker (queue images)"]
    assert lines.pop("After") == ["network-online.target docker.service"]
    assert lines.pop("Wants") == ["network-online.target"]
    assert lines.pop("Type") == ["simple"]
    assert lines.pop("User") == ["kitty"]
    assert lines.pop("WorkingDirectory") == [APP]
    assert lines.pop("ExecStart") == [" ".join(f'"{arg}"' for arg in worker.argv)]
    assert lines.pop("Environment") == ['"PYTHONUNBUFFERED=1"']
    assert lines.pop("Restart") == ["always"]
    assert lines.pop("RestartSec") == ["10"]
    assert lines.pop("StandardOutput") == ["append:/Users/Shared/Coding/KITT/.logs/rq_worker.log"]
    assert lines.pop("StandardError") == ["append:/Users/Shared/Coding/KITT/.logs/rq_worker.log"]
    assert lines.pop("KillMode") == ["mixed"]
    assert lines.pop("TimeoutStopSec") == ["90"]
    assert lines.pop("TimeoutStartSec") == ["infinity"]
    assert lines.pop("LimitNOFILE") == ["10240"]
    assert lines.pop("WantedBy") == ["multi-user.target"]
    assert lines == {}, f"keys nobody checked: {sorted(lines)}"
    assert "TimeoutStopSec=30" in systemd.render(api)


def test_a_unit_quotes_what_systemd_would_expand():
    cfg = enabled(kitty_paths__kitty_root="/srv/K $HOME 100%")
    (exec_start,) = unit_lines(systemd.render(images.programs(cfg, LINUX)[1]))["ExecStart"]
    assert exec_start.startswith('"/srv/K $$HOME 100%%/services/images_service/.venv/bin/uvicorn" "main:app"')


def test_both_plists_key_by_key():
    cfg = enabled(kitty_paths__service_user="kitty")
    for program in images.programs(cfg, MAC):
        plist = plistlib.loads(launchd.render(program).encode())
        assert plist.pop("Label") == f"com.kitty.images.{program.name.split()[1]}"
        assert plist.pop("ProgramArguments") == program.argv
        assert plist.pop("WorkingDirectory") == APP
        assert plist.pop("StandardOutPath") == program.log
        assert plist.pop("StandardErrorPath") == program.log
        assert plist.pop("EnvironmentVariables") == {"PYTHONUNBUFFERED": "1"}
        assert plist.pop("UserName") == "kitty"
        assert plist.pop("RunAtLoad") is True
        assert plist.pop("KeepAlive") is True
        assert plist.pop("ThrottleInterval") == 10
        assert plist.pop("ProcessType") == "Interactive"
        assert plist.pop("ExitTimeOut") == program.stop_timeout
        assert plist.pop("SoftResourceLimits") == plist.pop("HardResourceLimits") == {"NumberOfFiles": 10240}
        assert plist == {}, f"keys nobody checked: {sorted(plist)}"


def test_plists_are_daemons_even_when_model_servers_are_configured_as_agents():
    cfg = enabled(kitty_launchd__kind="agent")
    plist = plistlib.loads(launchd.render(images.programs(cfg, MAC)[0]).encode())
    assert plist["UserName"] == "admin"


# --- Config -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"kitty_stack__enabled": False}, "kitty_images.enabled: the images service needs the app checkout"),
        ({"kitty_images__redis_service": "valkey"}, "with kitty_stack.services.valkey and its port"),
        ({"kitty_stack__services__redis": {"health": None}}, "with kitty_stack.services.redis and its port"),
        ({"kitty_images__path": "../elsewhere"}, "kitty_images.path: must be a relative path inside the app checkout"),
        ({"kitty_images__path": "/abs"}, "kitty_images.path: must be a relative path"),
        ({"kitty_images__requirements": "a/../../b.txt"}, "kitty_images.requirements: must be a relative path"),
        ({"kitty_images__port": 6379}, "kitty_images.port: port 6379 is already used by kitty_stack.services.redis"),
        ({"kitty_images__health_timeout": 0}, "kitty_images.health_timeout"),
        ({"kitty_images__pythn": "python3.12"}, "kitty_images.pythn: unknown setting"),
    ],
)
def test_bad_images_settings_are_refused_naming_the_field(changes, message):
    with pytest.raises(config.ConfigError, match=message.replace(".", r"\.")):
        enabled(**changes)


def test_disabled_images_need_no_redis():
    cfg = config.load(host_data(kitty_images__redis_service="valkey"))
    assert not cfg.images.enabled


# --- Shell snippets, run here --------------------------------------------------------------------------


def sh(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)


def test_the_requirements_fact_reads_the_file_hash_and_the_record(tmp_path):
    requirements, record = tmp_path / "requirements.txt", tmp_path / ".venv" / images.RECORD
    fact = images.Requirements()
    command = fact.command(requirements=str(requirements), record=str(record))
    assert fact.process(sh(command).stdout.splitlines()) == {"file": None, "installed": None}
    requirements.write_text("rq==1.16.2\n")
    record.parent.mkdir()
    record.write_text("abc\n")
    wanted = hashlib.sha256(b"rq==1.16.2\n").hexdigest()
    assert fact.process(sh(command).stdout.splitlines()) == {"file": wanted, "installed": "abc"}


def test_the_install_runs_pip_once_per_requirements_content_and_records_only_success(tmp_path):
    venv, requirements = tmp_path / ".venv", tmp_path / "requirements.txt"
    (venv / "bin").mkdir(parents=True)
    calls = tmp_path / "pip-calls"
    pip = venv / "bin" / "pip"
    pip.write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(calls))}\n[ ! -e {tmp_path}/fail ]\n')
    pip.chmod(0o755)
    (command,) = images.install_requirements._inner(venv=str(venv), requirements=str(requirements))
    script = command.args[0]

    missing = sh(script)
    assert missing.returncode == 1 and f"{requirements}: no such file (kitty_images.requirements)" in missing.stderr
    requirements.write_text("rq==1.16.2\n")
    assert sh(script).returncode == 0 and sh(script).returncode == 0
    assert calls.read_text().splitlines() == [f"install --disable-pip-version-check -r {requirements}"]
    record = venv / images.RECORD
    assert record.read_text().strip() == hashlib.sha256(b"rq==1.16.2\n").hexdigest()

    requirements.write_text("rq==1.16.2\nuvicorn==0.30.0\n")
    (tmp_path / "fail").touch()
    assert sh(script).returncode == 1
    assert record.read_text().strip() == hashlib.sha256(b"rq==1.16.2\n").hexdigest(), "a failed install is retried"
    (tmp_path / "fail").unlink()
    assert sh(script).returncode == 0
    assert len(calls.read_text().splitlines()) == 3
