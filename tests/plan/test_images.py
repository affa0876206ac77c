"""The optional images service (tasks/images.py) planned, and executed, for simulated Linux hosts and Macs."""

from __future__ import annotations

import copy
import hashlib
import plistlib

import pytest
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operations import run_ops
from pyinfra.api.state import StateStage

from tasks import config, images, launchd
from tests.plan import hosts, launchd_facts, stack_facts
from tests.plan.harness import plan, prepared, simulated_platform

ENABLED = {"kitty_images": {**hosts.DEFAULTS["kitty_images"], "enabled": True}}
CFG = config.load({**hosts.DEFAULTS, **ENABLED})
LINUX = simulated_platform("linux", "admin", "x86_64")
MAC = simulated_platform("macos", "admin", "arm64")
VENV = "/Users/Shared/Coding/KITT/services/images_service/.venv"
REQUIREMENTS = "/Users/Shared/Coding/KITT/services/images_service/requirements.txt"
SHA = hashlib.sha256(b"rq==1.16.2\nuvicorn==0.30.0\n").hexdigest()
WAIT = "Wait for the images API (GET /)"


def requirements(file: str | None = SHA, installed: str | None = SHA) -> dict:
    """The Requirements fact: the file's sha256 now and the one recorded after the last install."""
    return {f"echo file $( (sha256sum {REQUIREMENTS}": [f"file {file or ''}", f"installed {installed or ''}"]}


def venv(present: bool = True) -> dict:
    return launchd_facts.file(f"{VENV}/bin/activate", "# venv" if present else None, user="admin", group="admin")


def linux_units(*, running: bool = True, unit: str | None = "same") -> dict:
    facts = {}
    for program in images.programs(CFG):
        name = images.unit_name(program.name)
        text = images.render_unit(CFG, LINUX, program) if unit == "same" else unit
        facts.update(launchd_facts.file(f"{images.UNIT_DIR}/{name}", text, group="root"))
        facts[f"--property SubState {name}"] = [f"Id={name}", f"SubState={'running' if running else 'dead'}"]
        facts[f"--property UnitFileState {name}"] = [f"Id={name}", "UnitFileState=enabled"]
    return facts


def mac_jobs(*, loaded: bool = True) -> dict:
    facts = {}
    for program in images.programs(CFG):
        job_label = images.label(program.name)
        facts.update(launchd_facts.job(f"system/{job_label}", loaded=loaded))
        plist = images.render_plist(CFG, MAC, program) if loaded else None
        facts.update(launchd_facts.file(launchd.plist_path(job_label, "daemon"), plist))
    return facts


def with_facts(base: dict, *updates: dict) -> dict:
    # The first match wins: the images facts go in front.
    merged = {}
    for update in updates:
        merged.update(update)
    return {**merged, **{k: v for k, v in base.items() if k not in merged}}


def linux_converged(**changes) -> dict:
    parts = {"requirements": requirements(), "venv": venv(), "units": linux_units(), **changes}
    return with_facts(hosts.linux_converged(), *parts.values())


def mac_converged(**changes) -> dict:
    parts = {"requirements": requirements(), "venv": venv(), "jobs": mac_jobs(), **changes}
    return with_facts(hosts.macos_converged(), *parts.values())


def image_ops(result) -> list[str]:
    return [op.name for op in result.ops if op.name.lower().startswith("images") or "images" in op.name]


def execute_calls(responses: dict, data: dict | None = None, groups=("inference", "application")) -> list:
    """Plan and run deploy.py on one fake host: (command, connector arguments) of all it ran, facts included."""
    with prepared(responses, data, groups) as (state, host, ran):
        state.set_stage(StateStage.Execute)
        try:
            run_ops(state)
        except PyinfraError as error:
            # The health table at the end fails on a fake host: only the ops before it matter here.
            assert "No hosts remaining" in str(error)
        return ran


def execute(responses: dict, data: dict | None = None) -> list[str]:
    return [command for command, _ in execute_calls(responses, data)]


# --- Linux: venv, pip, two systemd units ---------------------------------------------------


def test_fresh_linux_plans_venv_then_pip_then_both_units_started_then_waits_for_the_api():
    result = plan(hosts.linux(installed=hosts.APT_PACKAGES), data=ENABLED)
    assert image_ops(result) == [
        "Images service venv (python3 -m venv)",
        "Install the images service's requirements.txt (pip)",
        "images worker: unit",
        "images worker: start",
        "images api: unit",
        "images api: start",
    ]
    # After the stack, whose Redis the worker needs.
    order = [op.name for op in result.ops]
    assert order.index("docker compose up") < order.index("Images service venv (python3 -m venv)")
    assert result.op("Images service venv (python3 -m venv)").commands == [f"python3 -m venv {VENV}"]
    (pip,) = result.op("Install the images service's requirements.txt (pip)").commands
    assert f"r={REQUIREMENTS};" in pip and f"{VENV}/bin/pip install --disable-pip-version-check -r" in pip
    assert f"rec={VENV}/.kitty-requirements.sha256" in pip
    assert result.op("images api: start").commands == [
        "systemctl start kitty-images-api.service",
        "systemctl enable kitty-images-api.service",
    ]
    # Waited for only if something (re)started it: planned as conditional.
    (wait,) = [op for op in result.conditional if op.name == WAIT]
    assert "curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:8089/" in wait.commands[0]
    assert '"$i" -ge 300' in wait.commands[0]


def test_converged_linux_with_images_plans_nothing():
    assert plan(linux_converged(), data=ENABLED).ops == []


def test_converged_linux_with_images_executes_no_install_and_no_restart():
    ran = execute(linux_converged(), data=ENABLED)
    assert not [c for c in ran if "kitty-images" in c and ("restart" in c or "start " in c)]
    assert not [c for c in ran if "pip install" in c or "curl -fsS" in c]


def test_changed_requirements_install_again_and_restart_both_then_wait():
    facts = linux_converged(requirements=requirements(file="f" * 64))
    result = plan(facts, data=ENABLED)
    assert image_ops(result) == ["Install the images service's requirements.txt (pip)"]
    ran = execute(facts, data=ENABLED)
    pip = next(i for i, c in enumerate(ran) if "pip install" in c)
    worker = ran.index("systemctl restart kitty-images-worker.service")
    api = ran.index("systemctl restart kitty-images-api.service")
    wait = next(i for i, c in enumerate(ran) if "curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:8089/" in c)
    assert pip < worker < api < wait


def test_a_missing_venv_is_made_again_and_installed_into():
    facts = linux_converged(venv=venv(present=False), requirements=requirements(installed=None))
    result = plan(facts, data=ENABLED)
    assert image_ops(result) == [
        "Images service venv (python3 -m venv)",
        "Install the images service's requirements.txt (pip)",
    ]


def test_a_changed_unit_is_rewritten_and_only_that_program_restarts():
    old_unit = images.render_unit(CFG, LINUX, images.programs(CFG)[1]).replace("RestartSec=10", "RestartSec=5")
    api = images.unit_name("api")
    facts = linux_converged(changed=launchd_facts.file(f"{images.UNIT_DIR}/{api}", old_unit, group="root"))
    assert image_ops(plan(facts, data=ENABLED)) == ["images api: unit"]
    ran = execute(facts, data=ENABLED)
    assert "systemctl restart kitty-images-api.service" in ran
    assert "systemctl restart kitty-images-worker.service" not in ran
    assert not [c for c in ran if "pip install" in c]


def test_a_stopped_service_is_started_not_restarted():
    facts = linux_converged(units=linux_units(running=False))
    assert image_ops(plan(facts, data=ENABLED)) == ["images worker: start", "images api: start"]


def test_a_moving_checkout_reinstalls_if_needed_and_restarts_both():
    data = {**ENABLED, "kitty_stack": {**hosts.DEFAULTS["kitty_stack"], "ref": "v2"}}
    moved = stack_facts.checkout(CFG, head=stack_facts.HEAD, wanted="f" * 40)
    facts = linux_converged(checkout=moved)
    result = plan(facts, data=data)
    assert "Check out the application at v2" in [op.name for op in result.ops]
    # In step now: the install waits on the checkout (the new requirements may differ).
    assert "Install the images service's requirements.txt (pip)" in [op.name for op in result.conditional]
    assert image_ops(result) == []
    ran = execute(facts, data=data)
    assert "systemctl restart kitty-images-worker.service" in ran
    assert "systemctl restart kitty-images-api.service" in ran
    # The install re-hashes on the host and installs only when the file changed.
    assert [c for c in ran if "pip install" in c and '[ "$h" = "$(cat "$rec"' in c]


def test_disabled_after_enabled_stops_and_removes_both_units():
    result = plan(linux_converged())
    assert image_ops(result) == [
        "images worker: stop and disable",
        "images worker: remove unit",
        "images api: stop and disable",
        "images api: remove unit",
    ]
    assert result.op("images api: stop and disable").commands == [
        "systemctl stop kitty-images-api.service",
        "systemctl disable kitty-images-api.service",
    ]
    assert result.op("images api: remove unit").commands == ["rm -f /etc/systemd/system/kitty-images-api.service"]


def test_never_enabled_plans_nothing_on_linux_or_mac():
    assert image_ops(plan(hosts.linux_converged())) == []
    assert image_ops(plan(hosts.macos_converged())) == []


def test_a_service_user_owns_the_venv_and_its_packages_on_an_application_only_host():
    data = {**ENABLED, "kitty_paths": {**hosts.DEFAULTS["kitty_paths"], "service_user": "kitty"}}
    ran = execute_calls(hosts.linux(installed=hosts.APT_PACKAGES), data, groups=("application",))
    (venv_args,) = [args for command, args in ran if command == f"python3 -m venv {VENV}"]
    (pip_args,) = [args for command, args in ran if "pip install --disable-pip-version-check" in command]
    for args in (venv_args, pip_args):
        assert args.get("_sudo") is True and args.get("_sudo_user") == "kitty"


# --- macOS: two LaunchDaemons -------------------------------------------------------------------


def test_fresh_mac_bootstraps_both_daemons_without_a_kickstart_on_top():
    result = plan(hosts.macos(installed=hosts.BREW_PACKAGES), data=ENABLED)
    assert image_ops(result) == [
        "Images service venv (python3 -m venv)",
        "Install the images service's requirements.txt (pip)",
        "images worker: launchd job com.kitty.images.worker",
        "images api: launchd job com.kitty.images.api",
    ]
    for program in ("worker", "api"):
        text = "\n".join(result.op(f"images {program}: launchd job com.kitty.images.{program}").commands)
        assert f"launchctl bootstrap system /Library/LaunchDaemons/com.kitty.images.{program}.plist" in text
    assert not [op for op in result.conditional if "kickstart" in " ".join(op.commands) and "images" in op.name]
    # Homebrew's PATH for `python3 -m venv`: a non-login SSH session has none.
    ran = execute_calls(hosts.macos(installed=hosts.BREW_PACKAGES), ENABLED, groups=("application",))
    (venv_args,) = [args for command, args in ran if command == f"python3 -m venv {VENV}"]
    assert venv_args["_env"]["PATH"].startswith("/opt/homebrew/bin:")


def test_the_uploaded_plists_read_back_key_by_key():
    for program in images.programs(CFG):
        plist = plistlib.loads(images.render_plist(CFG, MAC, program).encode())
        assert plist["Label"] == f"com.kitty.images.{program.name}"
        assert plist["ProgramArguments"] == program.arguments
        assert plist["WorkingDirectory"] == "/Users/Shared/Coding/KITT/services/images_service"
        assert plist["UserName"] == "admin"
        assert plist["KeepAlive"] is True and plist["RunAtLoad"] is True


def test_converged_mac_with_images_plans_nothing():
    assert plan(mac_converged(), data=ENABLED).ops == []


def test_changed_requirements_on_a_mac_kickstart_both_after_the_install():
    facts = mac_converged(requirements=requirements(file="f" * 64))
    assert image_ops(plan(facts, data=ENABLED)) == ["Install the images service's requirements.txt (pip)"]
    ran = execute(facts, data=ENABLED)
    pip = next(i for i, c in enumerate(ran) if "pip install" in c)
    worker = next(i for i, c in enumerate(ran) if "launchctl kickstart -k system/com.kitty.images.worker" in c)
    api = next(i for i, c in enumerate(ran) if "launchctl kickstart -k system/com.kitty.images.api" in c)
    assert pip < worker < api


def test_disabled_on_a_mac_boots_out_and_deletes_both_plists():
    result = plan(mac_converged())
    assert image_ops(result) == [
        "images worker: remove launchd job",
        "images api: remove launchd job",
    ]
    text = "\n".join(result.op("images api: remove launchd job").commands)
    assert "launchctl bootout system/com.kitty.images.api" in text
    assert "rm -f /Library/LaunchDaemons/com.kitty.images.api.plist" in text


# --- Config ----------------------------------------------------------------------------------------


def test_images_without_the_stack_is_refused_before_planning():
    data = copy.deepcopy(ENABLED)
    data["kitty_stack"] = {**hosts.DEFAULTS["kitty_stack"], "enabled": False}
    with pytest.raises(PyinfraError, match="kitty_images.enabled: the images service needs"):
        plan(hosts.linux_converged(), data=data)
