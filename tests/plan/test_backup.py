"""backup.py and restore.py planned for a simulated Linux host: what runs, and that the password never shows."""

from __future__ import annotations

import pytest
from pyinfra.api.exceptions import PyinfraError

from tasks import config
from tasks.host import layout
from tasks.runbook import restic
from tests.plan import hosts, stack_facts
from tests.plan.harness import plan, simulated_platform

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
    from tasks.runbook import backup
    from tests.plan.harness import simulated_platform

    env = backup.script_env(CFG, simulated_platform("linux", "admin", "x86_64"), restic.TAG)
    assert env["PG_SERVICE"] == "postgres" and env["REDIS_SERVICE"] == "redis"
    assert "-p kitty " in env["COMPOSE"] and env["STAGE"].startswith(layout.backup_dir(CFG))
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
        "Restore Postgres, Redis, the S3 buckets and the .env; start the stack",
    ]
    assert PASSWORD not in everything(result)


def test_the_s3_store_is_reached_on_loopback_with_keys_named_not_given():
    from tasks.runbook import backup, restore

    env = backup.script_env(CFG, simulated_platform("linux", "admin", "x86_64"), restic.TAG)
    port = CFG.stack.services["minio"].port
    assert env["S3_SERVICE"] == "minio" and env["S3_ENDPOINT"] == f"http://127.0.0.1:{port}"
    # The names of the .env values holding the keys: the host reads the values there.
    assert env["S3_ACCESS_KEY_SECRET"] == "MINIO_ROOT_USER" and env["S3_SECRET_KEY_SECRET"] == "MINIO_ROOT_PASSWORD"
    assert env["S3_BWLIMIT"] == ""
    # The S3 store is restored under the writers, like Postgres and Redis: never stopped as one.
    assert "minio" not in restore.writers(CFG) and "brain" in restore.writers(CFG)


def test_the_s3_keys_never_reach_a_command_line(monkeypatch):
    monkeypatch.setenv("MINIO_ROOT_USER", "minio-canary-user-51c2")
    monkeypatch.setenv("MINIO_ROOT_PASSWORD", "minio-canary-pass-9d0e")
    for deploy_file, data in (("backup.py", {}), ("restore.py", {"backup": "latest"})):
        assert "minio-canary" not in everything(plan(linux(), data=data, deploy_file=deploy_file))
    from tasks.runbook import backup

    # The script's own command line: where it reaches the S3 store, and how the keys are named.
    env = backup.script_env(CFG, simulated_platform("linux", "admin", "x86_64"), restic.TAG)
    command = restic.script_command(env).get_masked_value()
    assert "minio-canary" not in command and "S3_ENDPOINT=http://127.0.0.1:9000" in command


def test_an_s3_endpoint_and_a_bandwidth_limit_are_passed_as_set():
    from tasks.runbook import backup

    data = {**hosts.DEFAULTS["kitty_backup"], "s3_endpoint": "http://10.0.0.5:9000", "s3_bwlimit": "20M"}
    env = backup.s3_env(config.load({**hosts.DEFAULTS, "kitty_backup": data}))
    assert env["S3_ENDPOINT"] == "http://10.0.0.5:9000" and env["S3_BWLIMIT"] == "20M"
    # No S3 service in the stack: no buckets, and nothing to restore them into.
    stack = {**hosts.DEFAULTS["kitty_stack"], "services": {"postgres": {"port": 5432}}}
    env = backup.s3_env(config.load({**hosts.DEFAULTS, "kitty_stack": stack}))
    assert env["S3_ENDPOINT"] == "" and env["S3_SERVICE"] == ""


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"s3_access_key_secret": "MINIO_ACCESS"}, "kitty_backup.s3_access_key_secret: MINIO_ACCESS is not in"),
        ({"s3_secret_key_secret": "S3_KEY"}, "kitty_backup.s3_secret_key_secret: S3_KEY is not in"),
        ({"s3_bwlimit": "20M; rm -rf /"}, "s3_bwlimit"),
        ({"s3_endpoint": "http://x:9000/$(id)"}, "s3_endpoint"),
    ],
)
def test_bad_s3_settings_name_their_field(change, field):
    with pytest.raises(config.ConfigError, match=field):
        config.load({**hosts.DEFAULTS, "kitty_backup": {**hosts.DEFAULTS["kitty_backup"], **change}})


def test_an_s3_service_without_a_port_needs_an_endpoint():
    services = {**hosts.DEFAULTS["kitty_stack"]["services"], "minio": {}}
    stack = {**hosts.DEFAULTS["kitty_stack"], "services": services}
    with pytest.raises(config.ConfigError, match="kitty_backup.s3_endpoint: kitty_stack.services.minio publishes"):
        config.load({**hosts.DEFAULTS, "kitty_stack": stack})


# --- one repository password per host (issue 26, item 3) ----------------------------------------


def test_each_host_takes_its_own_password_first_and_a_repository_elsewhere_only_its_own():
    local = config.load({**hosts.DEFAULTS, "kitty_backup": {}})
    assert restic.password_secrets(local, "studio2.local") == [
        "KITTY_BACKUP_PASSWORD_STUDIO2_LOCAL",
        "KITTY_BACKUP_PASSWORD",
    ]
    remote = config.load({**hosts.DEFAULTS, "kitty_backup": {"repository": "sftp:admin@laptop:/backups/kitty"}})
    assert restic.password_secrets(remote, "studio2.local") == ["KITTY_BACKUP_PASSWORD_STUDIO2_LOCAL"]
    shared = config.load(
        {**hosts.DEFAULTS, "kitty_backup": {"repository": "sftp:admin@laptop:/backups/kitty", "shared_password": True}}
    )
    assert restic.password_secrets(shared, "studio2.local")[-1] == "KITTY_BACKUP_PASSWORD"


def test_a_repository_off_the_host_refuses_the_shared_password(monkeypatch):
    """Whoever holds a repository's password can write snapshots another host restores."""
    remote = {"kitty_backup": {"repository": "sftp:admin@laptop:/backups/kitty"}}
    no_file = {"kitty_stack": {**hosts.DEFAULTS["kitty_stack"], "secrets_file": None}}
    with pytest.raises(
        PyinfraError, match=r"set KITTY_BACKUP_PASSWORD_FAKE_KITTY in the environment .* not on this host"
    ):
        plan(linux(), data={**remote, **no_file}, deploy_file="backup.py")
    monkeypatch.setenv("KITTY_BACKUP_PASSWORD_FAKE_KITTY", "own-password-canary")
    result = plan(linux(), data={**remote, **no_file}, deploy_file="backup.py")
    assert "own-password-canary" not in everything(result) and PASSWORD not in everything(result)


def test_snapshots_are_kept_under_the_inventory_name_not_hostname():
    """A Mac's `hostname` changes with its network: forget and `latest` would lose the older snapshots
    (issue 25, defect 7). The scripts get the inventory name; they never ask `hostname` for it."""
    result = plan(linux(), deploy_file="backup.py")
    backup = result.op("Backup into the restic repository")
    assert "'BACKUP_HOST': '@fake/kitty'" in " ".join(backup.commands)
    for script in ("backup-take.sh", "backup-verify.sh"):
        text = restic.templates.path(script).read_text()
        assert '--host "$(hostname)"' not in text
        assert text.count('--host "$BACKUP_HOST"') >= 1


def test_local_runs_key_backups_on_the_macs_local_host_name(monkeypatch):
    class Local:
        name = "@local"

    monkeypatch.setattr(restic, "host", Local())
    assert restic.backup_host() == ""
    assert "scutil --get LocalHostName" in restic.templates.path("backup-take.sh").read_text()
