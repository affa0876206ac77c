"""The optional images service (tasks/app/images.py) planned, and executed, for simulated Linux hosts and Macs."""

from __future__ import annotations

import copy
import hashlib
import plistlib

import pytest
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operations import run_ops
from pyinfra.api.state import StateStage

from tasks import config
from tasks.app import images
from tasks.host import layout
from tasks.supervise import launchd as supervise_launchd
from tasks.supervise import systemd as supervise_systemd
from tests.plan import hosts, launchd_facts, stack_facts, supervise_facts
from tests.plan.harness import plan, prepared, simulated_platform

ENABLED = {"kitty_images": {**hosts.DEFAULTS["kitty_images"], "enabled": True}}
CFG = config.load({**hosts.DEFAULTS, **ENABLED})
LINUX = simulated_platform("linux", "admin", "x86_64")
MAC = simulated_platform("macos", "admin", "arm64")
VENV = "/Users/Shared/Coding/KITT/services/images_service/.venv"
REQUIREMENTS = "/Users/Shared/Coding/KITT/services/images_service/requirements.txt"
SHA = hashlib.sha256(b"rq==1.16.2\nuvicorn==0.30.0\n").hexdigest()
WAIT = "Wait for the images API: images api"


def requirements(file: str | None = SHA, installed: str | None = SHA) -> dict:
    """The Requirements fact: the file's sha256 now and the one recorded after the last install."""
    return {f"echo file $( (sha256sum {REQUIREMENTS}": [f"file {file or ''}", f"installed {installed or ''}"]}


def venv(present: bool = True) -> dict:
    return launchd_facts.file(f"{VENV}/bin/activate", "# venv" if present else None, user="admin", group="admin")


def units(os: str, **departures) -> dict:
    """Both programs as a converged host has them; `departures` as supervise_facts.program takes them."""
    plat = LINUX if os == "linux" else MAC
    facts = {}
    records = layout.records_dir(CFG)
    for program in images.programs(CFG, plat):
        values = {"venv requirements": SHA, "app checkout": stack_facts.HEAD}
        facts.update(supervise_facts.program(program, os=os, records_dir=records, values=values, **departures))
    directory = layout.LAUNCH_DAEMONS if os == "macos" else layout.SYSTEMD_UNITS
    prefix = images.FAMILY.label_prefix if os == "macos" else images.FAMILY.unit_prefix
    names = [p.label if os == "macos" else p.unit for p in images.programs(CFG, plat)]
    facts.update(supervise_facts.installed(directory, prefix, names))
    return facts


def linux_units(**departures) -> dict:
    return units("linux", **departures)


def mac_jobs(**departures) -> dict:
    return units("macos", **departures)


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


def test_fresh_linux_plans_venv_then_pip_then_both_units_installed_then_waits_for_the_api():
    result = plan(hosts.linux(installed=hosts.APT_PACKAGES), data=ENABLED)
    assert image_ops(result) == [
        "Images service venv (python3 -m venv)",
        "Install the images service's requirements.txt (pip)",
        "images worker: install (new)",
        "images api: install (new)",
        WAIT,
    ]
    # After the stack, whose Redis the worker needs.
    order = [op.name for op in result.ops]
    assert order.index("docker compose up") < order.index("Images service venv (python3 -m venv)")
    assert result.op("Images service venv (python3 -m venv)").commands == [f"python3 -m venv {VENV}"]
    (pip,) = result.op("Install the images service's requirements.txt (pip)").commands
    assert f"r={REQUIREMENTS};" in pip and f"{VENV}/bin/pip install --disable-pip-version-check -r" in pip
    assert f"rec={VENV}/.kitty-requirements.sha256" in pip
    api = result.op("images api: install (new)").commands
    assert "systemctl daemon-reload" in api and "systemctl enable --now kitty-images-api.service" in api
    assert not [c for c in api if "restart" in c]
    # One wait loop for every supervised program: the API's GET / must answer 2xx.
    (wait,) = result.op(WAIT).commands
    assert "images api|http://127.0.0.1:8089/|300|/Users/Shared/Coding/KITT/.logs/service.log|http'" in wait


def test_converged_linux_with_images_plans_nothing():
    result = plan(linux_converged(), data=ENABLED)
    assert result.ops == []
    # The checkout stays (images asks the checkout's own fact): not even an install waiting on it.
    assert not [op.name for op in result.conditional if "images" in op.name]


def test_converged_linux_with_images_executes_no_install_and_no_restart():
    ran = execute(linux_converged(), data=ENABLED)
    assert not [c for c in ran if "kitty-images" in c and ("restart" in c or "start " in c)]
    assert not [c for c in ran if "pip install" in c or "wait-healthy" in c]


def test_changed_requirements_install_again_and_restart_both_once_then_wait():
    facts = linux_converged(requirements=requirements(file="f" * 64))
    result = plan(facts, data=ENABLED)
    assert image_ops(result) == [
        "Install the images service's requirements.txt (pip)",
        "images worker: restart (venv requirements replaced)",
        "images api: restart (venv requirements replaced)",
        WAIT,
    ]
    assert result.conditional == [] or not [op for op in result.conditional if "images" in op.name]


def test_a_missing_venv_is_made_again_and_installed_into():
    facts = linux_converged(venv=venv(present=False), requirements=requirements(installed=None))
    result = plan(facts, data=ENABLED)
    assert image_ops(result)[:2] == [
        "Images service venv (python3 -m venv)",
        "Install the images service's requirements.txt (pip)",
    ]


def test_a_changed_unit_is_rewritten_and_only_that_program_restarts():
    plat = LINUX
    api = images.programs(CFG, plat)[1]
    old_unit = supervise_systemd.render(api).replace("RestartSec=10", "RestartSec=5")
    changed = launchd_facts.file(supervise_systemd.unit_path(api.unit), old_unit, group="root")
    result = plan(linux_converged(changed=changed), data=ENABLED)
    assert image_ops(result) == ["images api: reload (its definition changed)", WAIT]
    commands = result.op("images api: reload (its definition changed)").commands
    assert commands[-4:-1] == [
        "systemctl daemon-reload",
        "systemctl restart kitty-images-api.service",
        "systemctl reset-failed kitty-images-api.service 2>/dev/null || true",
    ]


def test_a_stopped_service_is_started_not_restarted():
    result = plan(linux_converged(units=linux_units(running=False)), data=ENABLED)
    assert image_ops(result) == ["images worker: start (not running)", "images api: start (not running)", WAIT]
    assert "systemctl enable --now kitty-images-api.service" in result.op("images api: start (not running)").commands


def test_a_moving_checkout_restarts_both_once():
    data = {**ENABLED, "kitty_stack": {**hosts.DEFAULTS["kitty_stack"], "ref": "v2"}}
    moved = stack_facts.checkout(CFG, head=stack_facts.HEAD, wanted="f" * 40)
    result = plan(linux_converged(checkout=moved), data=data)
    planned = [op.name for op in result.ops]
    # In step now: the plan knows the checkout moves (its own fact), so the install runs after it
    # (the new requirements may differ; the install hashes them again and does nothing if not).
    checkout, install = "Check out the application at v2", "Install the images service's requirements.txt (pip)"
    assert checkout in planned and install in planned
    assert planned.index(checkout) < planned.index(install)
    assert [n for n in image_ops(result) if "restart" in n] == [
        "images worker: restart (venv requirements replaced; app checkout replaced)",
        "images api: restart (venv requirements replaced; app checkout replaced)",
    ]


def test_disabled_after_enabled_stops_and_removes_both_units():
    result = plan(linux_converged())
    assert image_ops(result) == [
        "images worker: stop and remove (disabled)",
        "images api: stop and remove (disabled)",
    ]
    assert result.op("images api: stop and remove (disabled)").commands == [
        "systemctl disable --now kitty-images-api.service || true",
        "rm -f /etc/systemd/system/kitty-images-api.service",
        "systemctl daemon-reload",
    ]


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
        "images worker: install (new)",
        "images api: install (new)",
        WAIT,
    ]
    for program in ("worker", "api"):
        text = "\n".join(result.op(f"images {program}: install (new)").commands)
        assert f"launchctl bootstrap system /Library/LaunchDaemons/com.kitty.images.{program}.plist" in text
        assert "kickstart" not in text
    # Homebrew's PATH for `python3 -m venv`: a non-login SSH session has none.
    ran = execute_calls(hosts.macos(installed=hosts.BREW_PACKAGES), ENABLED, groups=("application",))
    (venv_args,) = [args for command, args in ran if command == f"python3 -m venv {VENV}"]
    assert venv_args["_env"]["PATH"].startswith("/opt/homebrew/bin:")


def test_the_uploaded_plists_read_back_key_by_key():
    for program in images.programs(CFG, MAC):
        plist = plistlib.loads(supervise_launchd.render(program).encode())
        assert plist["Label"] == f"com.kitty.images.{program.name.split()[1]}"
        assert plist["ProgramArguments"] == program.argv
        assert plist["WorkingDirectory"] == "/Users/Shared/Coding/KITT/services/images_service"
        assert plist["UserName"] == "admin"
        assert plist["KeepAlive"] is True and plist["RunAtLoad"] is True
        assert plist["ExitTimeOut"] == program.stop_timeout
        assert plist["SoftResourceLimits"]["NumberOfFiles"] >= 1024


def test_converged_mac_with_images_plans_nothing():
    assert plan(mac_converged(), data=ENABLED).ops == []


def test_changed_requirements_on_a_mac_restart_each_once_after_the_install():
    facts = mac_converged(requirements=requirements(file="f" * 64))
    result = plan(facts, data=ENABLED)
    assert image_ops(result) == [
        "Install the images service's requirements.txt (pip)",
        "images worker: restart (venv requirements replaced)",
        "images api: restart (venv requirements replaced)",
        WAIT,
    ]
    commands = result.op("images api: restart (venv requirements replaced)").commands
    launchctl = [c for c in commands if "launchctl" in c]
    # bootout (the worker finishes its image within its ExitTimeOut), then bootstrap; no kickstart -k.
    assert len(launchctl) == 2 and "kickstart" not in " ".join(launchctl)
    assert "launchctl bootout system/com.kitty.images.api" in launchctl[0]
    assert "launchctl bootstrap system /Library/LaunchDaemons/com.kitty.images.api.plist" in launchctl[1]


def test_disabled_on_a_mac_boots_out_and_deletes_both_plists():
    result = plan(mac_converged())
    assert image_ops(result) == [
        "images worker: stop and remove (disabled)",
        "images api: stop and remove (disabled)",
    ]
    text = "\n".join(result.op("images api: stop and remove (disabled)").commands)
    assert "launchctl bootout system/com.kitty.images.api" in text
    assert "rm -f /Library/LaunchDaemons/com.kitty.images.api.plist" in text


# --- Config ----------------------------------------------------------------------------------------


def test_images_without_the_stack_is_refused_before_planning():
    data = copy.deepcopy(ENABLED)
    data["kitty_stack"] = {**hosts.DEFAULTS["kitty_stack"], "enabled": False}
    with pytest.raises(PyinfraError, match="kitty_images.enabled: the images service needs"):
        plan(hosts.linux_converged(), data=data)
