"""Plan the real deploy.py against a simulated host and return what it would run.

A host we cannot run here (a Mac) is simulated with pyinfra's `@fake`
connector: every fact command gets scripted output (`responses`, matched by
substring or regex, first match wins) and every other command "succeeds".
Nothing is executed: the deploy is only planned, as `--dry` does.
"""

from __future__ import annotations

import os
import runpy
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyinfra.api import Config, Inventory, State
from pyinfra.api.command import StringCommand
from pyinfra.api.connect import connect_all
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state
from pyinfra_cli.util import load_deploy_file

from tasks.host.platform import BREW_PREFIX, Platform

ROOT = Path(__file__).resolve().parents[2]
HOST = "@fake/kitty"


@dataclass
class PlannedOp:
    # The operation's name without the "Deploy | " prefix of the step it is in.
    name: str
    commands: list[str]


@dataclass
class Plan:
    # Operations that will change something.
    ops: list[PlannedOp]
    # Operations that run only if an earlier one changed something (`_if`),
    # such as a restart after a new build: on a converged host they never run.
    conditional: list[PlannedOp]
    # Every command the simulated host was asked, facts included, with the
    # environment it was given (`_env`).
    executed: list[tuple[str, dict]]

    @property
    def commands(self) -> list[str]:
        return [command for op in self.ops for command in op.commands]

    def op(self, name: str) -> PlannedOp:
        matches = [op for op in self.ops if op.name == name]
        assert matches, f"no planned operation named {name!r}; planned: {[op.name for op in self.ops]}"
        return matches[0]


def group_data() -> dict:
    """The deploy's defaults, as pyinfra loads them from group_data/all.py."""
    values = runpy.run_path(str(ROOT / "group_data" / "all.py"))
    return {key: value for key, value in values.items() if not key.startswith("_") and key.isidentifier()}


def plan(
    responses: dict, data: dict | None = None, groups=("inference", "application"), deploy_file: str = "deploy.py"
) -> Plan:
    """Plan `deploy_file` (relative to the project root) for one fake host answering
    `responses`; `data` overrides group data."""
    with prepared(responses, data, groups, deploy_file) as (state, host, calls):
        ops, conditional = _collect(state, host)
        executed = [(command, dict(arguments.get("_env") or {})) for command, arguments in calls]
        return Plan(ops=ops, conditional=conditional, executed=executed)


@contextmanager
def prepared(
    responses: dict,
    data: dict | None = None,
    groups=("inference", "application"),
    deploy_file="deploy.py",
    config: Config | None = None,
):
    """The state after pyinfra prepared `deploy_file` for one fake host, inside its context.

    Yields (state, host, calls): `calls` lists every command the host was
    asked, with its connector arguments, and keeps growing if the caller goes
    on to execute the operations (`run_ops(state)`). `config`: pyinfra's run settings
    (`Config(SUDO_PASSWORD=...)` is what `--same-sudo-password` gives a run).
    """
    host_data = {
        "fake_responses": responses,
        "fake_delay": 0,
        "fake_delay_jitter": 0,
        # The manual pins no model revision: plan the whole deploy anyway
        # (tests of the refusal pass allow_unpinned_models=False in `data`).
        "allow_unpinned_models": True,
    }
    inventory = Inventory(
        ([(HOST, host_data)], group_data()),
        override_data=data or {},
        **{group: ([HOST], {}) for group in groups},
    )
    state = State(check_for_changes=True)
    state.init(inventory, config or Config())
    old_cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with ctx_state.use(state):
            state.set_stage(StateStage.Connect)
            connect_all(state)
            host = inventory.get_host(HOST)
            calls = _record_commands(host)
            state.set_stage(StateStage.Prepare)
            load_deploy_file(state, str(ROOT / deploy_file))
            yield state, host, calls
    finally:
        os.chdir(old_cwd)


def _record_commands(host) -> list[tuple[str, dict]]:
    executed = []
    run = host.connector.run_shell_command

    def recording_run(command, *args, **arguments):
        executed.append((_text(command), arguments))
        return run(command, *args, **arguments)

    host.connector.run_shell_command = recording_run
    return executed


def _collect(state: State, host) -> tuple[list[PlannedOp], list[PlannedOp]]:
    ops, conditional = [], []
    for op_hash in state.get_op_order():
        if op_hash not in state.ops[host]:
            continue
        op_data = state.get_op_data_for_host(host, op_hash)
        if not op_data.operation_meta._maybe_is_change:
            continue
        with ctx_host.use(host):
            commands = [_text(command) for command in op_data.command_generator()]
        name = sorted(state.op_meta[op_hash].names)[0].split(" | ")[-1]
        (conditional if op_data.global_arguments["_if"] else ops).append(PlannedOp(name, commands))
    return ops, conditional


def _text(command) -> str:
    if isinstance(command, StringCommand):
        return command.get_masked_value()
    return repr(command)


def simulated_platform(os: str, user: str, arch: str) -> Platform:
    """The Platform tasks.host.platform.detect() would give a simulated host with these facts."""
    prefix = BREW_PREFIX.get(arch) if os == "macos" else None
    return Platform(os=os, arch=arch, user=user, sudo=user != "root", brew_prefix=prefix)
