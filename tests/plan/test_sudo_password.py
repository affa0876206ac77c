"""Every command every entry script runs carries the run's sudo settings (issue 25, defect 1).

A Mac's admin needs a password for sudo: the operator gives it once
(`--same-sudo-password`) and each `sudo` must get it through pyinfra's askpass
helper. A command that runs with `_sudo` but without the run's password becomes
`sudo -n`, which fails there: an unattended emergency stop would fail with it.
Here each entry script is executed against a simulated host with a run password,
and every command it sent with `_sudo` is checked for that password.
"""

from __future__ import annotations

import pytest
from pyinfra.api import Config
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operations import run_ops
from pyinfra.api.state import StateStage

from tasks import config
from tests.plan import hosts, stack_facts
from tests.plan.harness import prepared
from tests.plan.test_stop import linux, mac

CFG = config.load(hosts.DEFAULTS)
PASSWORD = "sudo-canary-7d2e"


def executed(responses: dict, script: str, data: dict | None = None) -> list[tuple[str, dict]]:
    run = Config(SUDO_PASSWORD=PASSWORD)
    with prepared(responses, data, ("inference", "application"), script, config=run) as (state, host, calls):
        state.set_stage(StateStage.Execute)
        try:
            run_ops(state)
        except PyinfraError:
            pass  # a fake host's facts do not change: a verification may fail; the commands are what counts
        return list(calls)


def without_password(calls: list[tuple[str, dict]]) -> list[str]:
    return [c for c, arguments in calls if arguments.get("_sudo") and arguments.get("_sudo_password") != PASSWORD]


@pytest.mark.parametrize("emergency", [False, True])
@pytest.mark.parametrize("host", ["mac", "linux"])
def test_stop_runs_every_sudo_command_with_the_runs_password(host, emergency):
    facts = mac(stack="exited") if host == "mac" else linux(stack="exited")
    calls = executed(facts, "stop.py", {"emergency": "true"} if emergency else None)
    stops = [c for c, _ in calls if "kitty-stop" in c]
    assert stops, "no stop ran"
    assert without_password(calls) == []


def test_backup_runs_its_script_with_the_runs_password(monkeypatch):
    monkeypatch.setenv(CFG.backup.password_secret, "restic-password-x")
    containers = {name: {"state": "running"} for name in CFG.stack.services}
    facts = {**stack_facts.compose(CFG, containers=containers), **hosts.macos()}
    calls = executed(facts, "backup.py")
    assert [c for c, _ in calls if "backup-take" in c or "RESTIC" in c], "the backup script did not run"
    assert without_password(calls) == []
