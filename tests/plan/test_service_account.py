"""The service account (kitty_paths.service_user) on macOS and Linux, planned against simulated hosts."""

import subprocess

import pytest
from pyinfra.api.exceptions import PyinfraError

from tasks.system import service_account
from tests.plan import hosts
from tests.plan.harness import plan

DEPLOY = "tests/plan/deploys/service_account.py"
PATHS = hosts.DEFAULTS["kitty_paths"]
LOGS, MODELS = PATHS["logs_dir"], PATHS["models_dir"]


def with_user(name: str | None) -> dict:
    return {"kitty_paths": {**PATHS, "service_user": name}}


def folder(path: str, group: str, mode: str) -> dict:
    return {f"test -L {path} )": f"user=admin group={group} mode=d{mode} atime=0 mtime=0 ctime=0 size=64 '{path}'"}


def existing(name: str, uid: int, group: str) -> dict:
    return {f"id -u {name} 2>/dev/null": [str(uid), group]}


def test_no_service_user_plans_nothing_and_asks_nothing():
    result = plan(hosts.macos(), data=with_user(None), deploy_file=DEPLOY)
    assert result.ops == []
    assert not any("id -u " in command for command, _ in result.executed)


def test_a_missing_account_on_macos_is_created_hidden_without_login_and_given_logs_and_models():
    result = plan(hosts.macos(), data=with_user("kitty"), deploy_file=DEPLOY)
    assert [op.name for op in result.ops] == [
        "Service account kitty (hidden, no login)",
        "Logs folder writable by kitty",
        "Models folder readable by kitty",
    ]
    (create,) = result.op("Service account kitty (hidden, no login)").commands
    assert create == service_account.macos_create_script("kitty")
    assert result.op("Logs folder writable by kitty").commands == [
        f"mkdir -p {LOGS}",
        f"chmod 775 {LOGS}",
        f"chgrp kitty {LOGS}",
    ]
    assert result.op("Models folder readable by kitty").commands[1:] == [
        f"chmod 755 {MODELS}",
        f"chgrp kitty {MODELS}",
    ]


def test_an_existing_account_with_its_folders_in_place_plans_nothing():
    facts = {
        **existing("kitty", 301, "kitty"),
        **folder(LOGS, "kitty", "rwxrwxr-x"),
        **folder(MODELS, "kitty", "rwxr-xr-x"),
        **hosts.macos(),
    }
    assert plan(facts, data=with_user("kitty"), deploy_file=DEPLOY).ops == []


def test_an_existing_account_gets_its_own_group_on_the_folders():
    facts = {**existing("svc", 502, "staff"), **hosts.macos()}
    result = plan(facts, data=with_user("svc"), deploy_file=DEPLOY)
    assert [op.name for op in result.ops] == ["Logs folder writable by svc", "Models folder readable by svc"]
    assert f"chgrp staff {LOGS}" in result.op("Logs folder writable by svc").commands


def test_a_folder_closed_on_the_way_is_refused_by_field_before_anything_changes():
    facts = {
        **existing("kitty", 301, "kitty"),
        # What the walk prints, run as kitty: the nearest folder it cannot enter.
        "while [ ! -d": "/Users/Shared/Coding",
        **hosts.macos(),
    }
    with pytest.raises(PyinfraError) as refused:
        plan(facts, data=with_user("kitty"), deploy_file=DEPLOY)
    message = str(refused.value)
    assert "the service account 'kitty' (kitty_paths.service_user) cannot reach" in message
    assert f"kitty_paths.logs_dir ({LOGS}) and kitty_paths.models_dir ({MODELS})" in message
    assert "/Users/Shared/Coding is closed to it" in message


def test_a_missing_account_on_linux_is_a_system_user_without_login():
    result = plan(hosts.linux(), data=with_user("kitty"), deploy_file=DEPLOY)
    assert [op.name for op in result.ops][0] == "Service account kitty"
    # Nothing else: opt_dir (its nominal home) stays the admin's.
    (useradd,) = result.op("Service account kitty").commands
    assert useradd.startswith("useradd ") and " -r" in useradd
    assert f"-d {PATHS['opt_dir']}" in useradd and "-s /usr/sbin/nologin" in useradd
    assert f"chgrp kitty {LOGS}" in result.op("Logs folder writable by kitty").commands


def test_an_existing_account_on_linux_is_left_as_it_is():
    facts = {**existing("kitty", 998, "kitty"), **hosts.linux()}
    names = [op.name for op in plan(facts, data=with_user("kitty"), deploy_file=DEPLOY).ops]
    assert "Service account kitty" not in names


@pytest.mark.parametrize("shell", [["dash"], ["busybox", "sh"], ["bash", "--posix"]])
def test_the_macos_script_takes_one_id_free_for_user_and_group(tmp_path, shell):
    log = run_create_script(tmp_path, shell, users="root 0\n_www 70\nadmin 501\n_other 300", groups="wheel 0\n_g 301")
    assert log == [
        "-create /Groups/kitty PrimaryGroupID 302",
        "-create /Groups/kitty RealName KITTY services",
        "-create /Groups/kitty Password *",
        "-create /Users/kitty UniqueID 302",
        "-create /Users/kitty PrimaryGroupID 302",
        "-create /Users/kitty UserShell /usr/bin/false",
        "-create /Users/kitty NFSHomeDirectory /var/empty",
        "-create /Users/kitty RealName KITTY services",
        "-create /Users/kitty Password *",
        "-create /Users/kitty IsHidden 1",
    ]


def test_the_macos_script_reuses_a_group_left_by_an_interrupted_run(tmp_path):
    log = run_create_script(tmp_path, ["dash"], users="admin 501", groups="kitty 310", group_id="310")
    assert not any(line.startswith("-create /Groups/") for line in log)
    assert "-create /Users/kitty UniqueID 300" in log and "-create /Users/kitty PrimaryGroupID 310" in log


def test_the_macos_script_fails_by_name_when_no_id_is_free(tmp_path):
    users = "\n".join(f"_u{i} {i}" for i in range(300, 400))
    with pytest.raises(AssertionError, match="no free id in 300-399 for kitty"):
        run_create_script(tmp_path, ["dash"], users=users, groups="")


def run_create_script(tmp_path, shell, *, users: str, groups: str, group_id: str | None = None) -> list[str]:
    """The planned script against a stub dscl that answers like directory services and logs each change."""
    bin_dir, log = tmp_path / "bin", tmp_path / "dscl.log"
    bin_dir.mkdir()
    (tmp_path / "users").write_text(users + "\n")
    (tmp_path / "groups").write_text(groups + "\n")
    read_group = f"echo 'PrimaryGroupID: {group_id}'" if group_id else "echo 'eDSRecordNotFound' >&2; exit 56"
    (bin_dir / "dscl").write_text(
        "#!/bin/sh\nshift\n"
        f'case "$1 $2" in\n'
        f'"-list /Users") cat {tmp_path}/users ;;\n'
        f'"-list /Groups") cat {tmp_path}/groups ;;\n'
        f'"-read /Groups/kitty") {read_group} ;;\n'
        f'*) echo "$*" >> {log} ;;\n'
        "esac\n"
    )
    (bin_dir / "dscl").chmod(0o755)
    script = service_account.macos_create_script("kitty")
    done = subprocess.run(
        [*shell, "-c", script], env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return log.read_text().splitlines()
