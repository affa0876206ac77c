"""backup.py and restore.py planned for a simulated Linux host: what runs, and that the password never shows."""

from __future__ import annotations

import pytest
from pyinfra.api.exceptions import PyinfraError

from tasks import config, restic
from tests.plan import hosts, stack_facts
from tests.plan.harness import plan

CFG = config.load(hosts.DEFAULTS)
PASSWORD = "restic-canary-3f9a1c"


@pytest.fixture(autouse=True)
def password(monkeypatch):
    monkeypatch.setenv(CFG.backup.password_secret, PASSWORD)


def linux() -> dict:
    containers = {name: {"state": "running"} for name in CFG.stack.services}
    return {**stack_facts.compose(CFG, containers=containers), **hosts.linux()}


def names(result) -> list[str]:
    return [op.name for op in result.ops]


def everything(result) -> str:
    return " ".join(result.commands) + " ".join(command for command, _ in result.executed)


def test_backup_plans_the_folder_the_password_file_and_one_snapshot():
    result = plan(linux(), deploy_file="backup.py")
    assert names(result) == [
        "Backup folder (0700)",
        "restic password file (mode 0600, contents never shown)",
        "Backup into the restic repository",
    ]
    folder = result.op("Backup folder (0700)").commands
    assert any("chmod 700" in command for command in folder)


def test_the_restic_password_is_never_on_a_command_line_or_in_output():
    result = plan(linux(), deploy_file="backup.py")
    assert PASSWORD not in everything(result)
    env = restic.environment(CFG)
    assert env["RESTIC_PASSWORD_FILE"] == f"{CFG.paths.opt_dir}/backup/restic-password"
    assert env["RESTIC_REPOSITORY"] == f"{CFG.paths.opt_dir}/backup/repo"
    assert "RESTIC_PASSWORD=" not in " ".join(f"{k}={v}" for k, v in env.items())


def test_the_script_is_told_the_compose_project_the_datastores_and_the_keep_rules():
    from tasks import backup
    from tests.plan.harness import simulated_platform

    env = backup.script_env(CFG, simulated_platform("linux", "admin", "x86_64"), restic.TAG)
    assert env["PG_SERVICE"] == "postgres" and env["REDIS_SERVICE"] == "redis"
    assert "-p kitty " in env["COMPOSE"] and env["STAGE"].startswith(restic.folder(CFG))
    assert env["KEEP"] == "--keep-last 7 --keep-daily 7 --keep-weekly 4 --keep-monthly 6"
    assert restic.script_command(env).get_masked_value().startswith("env ")


def test_no_password_fails_before_anything_runs(monkeypatch):
    monkeypatch.delenv(CFG.backup.password_secret)
    with pytest.raises(PyinfraError, match="no restic password: set KITTY_BACKUP_PASSWORD"):
        plan(linux(), data={"kitty_stack": {**hosts.DEFAULTS["kitty_stack"], "secrets_file": None}},
             deploy_file="backup.py")  # fmt: skip


def test_a_bad_keep_rule_names_its_field():
    with pytest.raises(PyinfraError, match="kitty_backup.keep_daily"):
        plan(linux(), data={"kitty_backup": {"keep_daily": 0}}, deploy_file="backup.py")


def test_restore_needs_a_snapshot_id():
    with pytest.raises(PyinfraError, match="--data backup=<snapshot id|latest>"):
        plan(linux(), deploy_file="restore.py")
    with pytest.raises(PyinfraError, match="--data backup="):
        plan(linux(), data={"backup": "; rm -rf /"}, deploy_file="restore.py")


def test_restore_verifies_then_takes_a_safety_backup_then_restores():
    result = plan(linux(), data={"backup": "latest"}, deploy_file="restore.py")
    assert names(result) == [
        "Backup folder (0700)",
        "restic password file (mode 0600, contents never shown)",
        "Verify snapshot latest: restic check, restore --verify, the manifest",
        "Safety backup of the current state",
        "Restore Postgres, Redis and the .env; start the stack",
    ]
    assert PASSWORD not in everything(result)
