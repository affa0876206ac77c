"""remove.py planned for simulated converged hosts: what goes, how, and what is kept.

The sandbox (tests/e2e/test_remove.py) and the simulated Mac (tests/macsim/test_remove.py)
run it for real; these plans cover what neither has: a service account, the flags that remove
models and app data, folders holding something else, and the refusals.
"""

from __future__ import annotations

import pytest
from pyinfra.api.exceptions import PyinfraError

from tasks import config
from tasks.host import layout
from tasks.system import logs, memory_budget, service_account
from tests.plan import hosts, launchd_facts, supervise_facts
from tests.plan.harness import plan

CFG = config.load(hosts.DEFAULTS)
OPT = CFG.paths.opt_dir
MODELS = CFG.paths.models_dir
ROOT = CFG.paths.kitty_root
PROJECT = CFG.stack.project_name
OURS = ["llama.cpp", "keys", "state", "hf", "wait-healthy.sh"]
MODEL_DIRS = sorted({model.dir for model in CFG.models.values()})


def removal_facts(*, opt: list[str] = OURS, models: list[str] | None = None, engine: bool = True, os="linux") -> dict:
    """What a converged host has that remove.py looks at, beyond what hosts.py scripts."""
    folders = [f"folder {OPT}", *(f"entry {name}" for name in opt)]
    facts = {
        f"for d in {OPT};": folders,
        **launchd_facts.directory(OPT),
        **launchd_facts.file(logs.NEWSYSLOG_CONF if os == "macos" else logs.LOGROTATE_CONF, "# rotation\n"),
        "docker info >/dev/null 2>&1 || { echo no-engine": (
            [f"container {PROJECT}-brain-1", f"network {PROJECT}_default", f"volume {PROJECT}_pgdata"]
            if engine
            else ["no-engine"]
        ),
    }
    if models is not None:
        facts[f"for d in {MODELS} "] = [f"folder {MODELS}", *(f"entry {name}" for name in models)]
        facts.update(launchd_facts.directory(MODELS))
    return facts


def remove_plan(facts: dict, data: dict | None = None, groups=("inference", "application")):
    return plan(facts, data=data, groups=groups, deploy_file="remove.py")


def names(result) -> list[str]:
    return [op.name for op in result.ops]


def linux(**kwargs) -> dict:
    return {**removal_facts(**kwargs), **hosts.linux_converged()}


# --- Linux -----------------------------------------------------------------------------------


def test_linux_takes_out_the_stack_every_server_rotation_and_opt_dir_and_keeps_models_and_app_data():
    result = remove_plan(linux())
    planned = names(result)
    assert planned[0] == f"docker compose down of project {PROJECT} (volumes kept)"
    assert result.op(planned[0]).commands == [f"docker compose -p {PROJECT} down --remove-orphans 2>&1"]
    for name in CFG.servers:
        unit = layout.server_unit(name)
        commands = result.op(f"server {name}: stop and remove (host taken out)").commands
        assert f"systemctl disable --now {unit} || true" in commands
        assert any(f"rm -f {layout.SYSTEMD_UNITS}/{unit}" in c for c in commands)
    assert f"Log rotation entries ({logs.LOGROTATE_CONF})" in planned
    # opt_dir holds only what kitty-ops put there: it goes whole.
    assert result.op(f"kitty-ops' folder {OPT}").commands == [f"rm -rf {OPT}"]
    # Models and the app's folder are not touched; the volumes stay.
    assert not [c for c in result.commands if MODELS in c or f"rm -rf {ROOT}" in c or "--volumes" in c]


def test_the_servers_go_before_the_firewall_and_the_stack_before_everything():
    facts = linux()
    facts["[ -f /etc/kitty-ops/firewall.nft ]"] = ["file", "loaded 0123456789abcdef", "unit enabled"]
    planned = names(remove_plan(facts))
    firewall = planned.index("Remove the nftables table inet kitty_ops (no server beyond loopback here)")
    servers = [i for i, name in enumerate(planned) if name.startswith("server ")]
    assert servers and max(servers) < firewall
    assert planned[0].startswith("docker compose down")


def test_a_foreign_entry_keeps_opt_dir_and_only_kitty_ops_entries_go():
    facts = linux(opt=[*OURS, "backup", "notes.txt"])
    for name in OURS:
        if name.endswith(".sh"):
            facts.update(launchd_facts.file(f"{OPT}/{name}", "#!/bin/sh\n"))
        else:
            facts.update(launchd_facts.directory(f"{OPT}/{name}"))
    result = remove_plan(facts)
    planned = names(result)
    assert f"kitty-ops' folder {OPT}" not in planned
    assert {f"{OPT}/{name}" for name in OURS} <= set(planned)
    # The backup folder is never removed.
    assert not [c for c in result.commands if f"{OPT}/backup" in c]


def test_asked_it_removes_the_volumes_the_app_folder_and_the_model_files():
    facts = linux(models=[*MODEL_DIRS, ".kitty-staging"])
    for folder in MODEL_DIRS:
        facts[f"for d in {MODELS} {MODELS}/{folder}"] = []
    data = {"remove_models": "true", "remove_app_data": "true"}
    result = remove_plan(
        {
            **{f"test -L {ROOT} )": f"user=admin group=admin mode=drwxr-xr-x atime=0 mtime=0 ctime=0 size=64 '{ROOT}'"},
            **facts,
        },
        data=data,
    )
    planned = names(result)
    assert result.op(planned[0]).commands == [f"docker compose -p {PROJECT} down --remove-orphans --volumes 2>&1"]
    assert result.op(f"kitty_root {ROOT}").commands == [f"rm -rf {ROOT}"]
    assert result.op(f"Models folder {MODELS}").commands == [f"rm -rf {MODELS}"]


def test_a_model_folder_with_other_files_keeps_them():
    folder = MODEL_DIRS[0]
    ours = [f.name for m in CFG.models.values() if m.dir == folder for f in m.files]
    facts = linux(models=MODEL_DIRS)
    facts[f"for d in {MODELS} "] = [
        f"folder {MODELS}",
        *(f"entry {name}" for name in MODEL_DIRS),
        f"folder {MODELS}/{folder}",
        "entry .kitty",
        *(f"entry {name}" for name in ours),
        "entry mine.gguf",
    ]
    facts.update(launchd_facts.directory(f"{MODELS}/{folder}"))
    for name in [".kitty", *ours]:
        facts.update(launchd_facts.file(f"{MODELS}/{folder}/{name}", "x"))
    facts.update(launchd_facts.directory(f"{MODELS}/{folder}/.kitty"))
    result = remove_plan(facts, data={"remove_models": True})
    planned = names(result)
    assert f"Models folder {MODELS}" not in planned
    assert f"Model folder {MODELS}/{folder}" not in planned
    assert f"{MODELS}/{folder}/{ours[0]}" in planned
    assert not [c for c in result.commands if "mine.gguf" in c]


def test_a_service_account_kitty_ops_made_is_deleted_one_it_found_is_kept():
    data = {"kitty_paths": {**hosts.DEFAULTS["kitty_paths"], "service_user": "kitty"}}
    made = linux()
    made["getent passwd kitty"] = f"passwd kitty:x:998:998::{OPT}:{service_account.LINUX_SHELL}"
    assert remove_plan(made, data=data).op("Service account kitty").commands == ["userdel kitty"]
    found = linux()
    found["getent passwd kitty"] = "passwd kitty:x:1001:1001:Kitty:/home/kitty:/bin/bash"
    assert "Service account kitty" not in names(remove_plan(found, data=data))


def test_a_host_without_kitty_ops_plans_nothing():
    result = remove_plan(hosts.linux())
    assert names(result) == []


def test_no_engine_no_compose():
    assert not [n for n in names(remove_plan(linux(engine=False))) if "compose" in n]


# --- Refusals -----------------------------------------------------------------------------


def test_a_flag_that_is_not_true_or_false_is_refused_naming_it():
    with pytest.raises(PyinfraError, match="remove_models='maybe': say true or false"):
        remove_plan(linux(), data={"remove_models": "maybe"})


def test_app_data_that_holds_the_kept_models_is_refused():
    paths = {**hosts.DEFAULTS["kitty_paths"], "models_dir": f"{ROOT}/models"}
    with pytest.raises(PyinfraError, match=r"kitty_paths.models_dir .* is inside kitty_paths.kitty_root"):
        remove_plan(linux(), data={"remove_app_data": True, "kitty_paths": paths})


# --- macOS ---------------------------------------------------------------------------------


def test_mac_boots_out_each_job_and_sets_the_wired_limit_back():
    facts = {**removal_facts(os="macos"), **hosts.macos_converged()}
    labels = [layout.server_label(CFG, name) for name in CFG.servers]
    facts.update(supervise_facts.installed(layout.LAUNCH_DAEMONS, CFG.launchd.label_prefix, labels))
    facts.update(supervise_facts.installed(layout.LAUNCH_DAEMONS, layout.WIRED_LIMIT_LABEL, [layout.WIRED_LIMIT_LABEL]))
    result = remove_plan(facts)
    planned = names(result)
    for label in labels:
        name = label[len(CFG.launchd.label_prefix) :]
        commands = result.op(f"server {name}: stop and remove (host taken out)").commands
        assert any(f"launchctl bootout system/{label}" in c for c in commands)
        assert any(f"rm -f {layout.LAUNCH_DAEMONS}/{label}.plist" in c for c in commands)
    assert "wired-memory limit at boot: stop and remove (host taken out)" in planned
    sysctl = result.op("Metal wired-memory limit back to macOS's default (iogpu.wired_limit_mb 0)").commands
    assert any(f"{memory_budget.WIRED_LIMIT}" in c and "0" in c for c in sysctl)
    assert f"Log rotation entries ({logs.NEWSYSLOG_CONF})" in planned


@pytest.mark.parametrize("os", ["macos", "linux"])
def test_every_sudo_command_carries_the_runs_password(os):
    """A Mac's admin sudo asks for a password: each command of remove.py gets the run's (--same-sudo-password)."""
    from tests.plan.test_sudo_password import executed, without_password

    facts = {**removal_facts(os=os), **(hosts.macos_converged() if os == "macos" else hosts.linux_converged())}
    if os == "macos":
        labels = [layout.server_label(CFG, name) for name in CFG.servers]
        facts.update(supervise_facts.installed(layout.LAUNCH_DAEMONS, CFG.launchd.label_prefix, labels))
    calls = executed(facts, "remove.py")
    assert [c for c, _ in calls if "rm -rf /opt/kitty" in c], "the removal did not run"
    assert without_password(calls) == []


def test_prometheus_jobs_and_its_copies_of_the_keys_go_too():
    jobs, keys = layout.metrics_jobs(CFG), layout.prometheus_keys_dir(CFG)
    facts = linux()
    facts.update(launchd_facts.file(jobs, "scrape_configs: []\n"))
    facts.update(launchd_facts.directory(keys))
    result = remove_plan(facts)
    assert result.op(f"Prometheus jobs {jobs}").commands == [f"rm -f {jobs}"]
    assert result.op(f"Prometheus's copies of the keys {keys}").commands == [f"rm -rf {keys}"]


def test_prometheus_key_copies_in_opt_dir_are_kitty_ops_own_so_opt_dir_goes_whole():
    # Else the first run keeps opt_dir for them, deletes them anyway, and the second run removes opt_dir.
    result = remove_plan(linux(opt=[*OURS, "prometheus-keys"]))
    assert result.op(f"kitty-ops' folder {OPT}").commands == [f"rm -rf {OPT}"]


def test_a_backup_in_opt_dir_keeps_the_folder_but_kitty_ops_entries_go():
    facts = linux(opt=[*OURS, "backup"])
    for name in OURS:
        if name.endswith(".sh"):
            facts.update(launchd_facts.file(f"{OPT}/{name}", "#!/bin/sh\n"))
        else:
            facts.update(launchd_facts.directory(f"{OPT}/{name}"))
    result = remove_plan(facts)
    planned = names(result)
    assert f"kitty-ops' folder {OPT}" not in planned
    assert {f"{OPT}/{name}" for name in OURS} <= set(planned)
    assert not [c for c in result.commands if f"{OPT}/backup" in c or c.endswith(f"rm -rf {OPT}")]
