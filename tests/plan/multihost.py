"""Plan the real deploy.py for several simulated hosts at once, as one `pyinfra inventory deploy.py --dry`.

tests/plan/harness.py plans one host; placement (tasks/config/placement.py) is a property of
the whole inventory, so these plans put every host in one pyinfra Inventory and State.
"""

from __future__ import annotations

import os
import runpy
import sys
from contextlib import contextmanager
from io import StringIO

from pyinfra import context
from pyinfra.api import Config, FileUploadCommand, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state
from pyinfra_cli.util import load_deploy_file

from tests.plan.harness import ROOT, Plan, PlannedOp, _record_commands, _text, group_data

# The module, not the `operation` decorator that pyinfra.api exports under the same name.
pyinfra_operation = sys.modules["pyinfra.api.operation"]

FAKE = {"fake_delay": 0, "fake_delay_jitter": 0, "allow_unpinned_models": True}


def inventory_file(path: str) -> dict[str, tuple[dict, tuple[str, ...]]]:
    """An inventory file's hosts: {name: (data, groups)}, as pyinfra would read its group lists."""
    module = runpy.run_path(str(ROOT / path))
    found: dict[str, tuple[dict, list[str]]] = {}
    for group in ("inference", "application"):
        for name, data in module.get(group, []):
            known, groups = found.setdefault(name, ({}, []))
            known.update(data)
            groups.append(group)
    return {name: (data, tuple(groups)) for name, (data, groups) in found.items()}


def plan_hosts(hosts: dict[str, tuple[dict, tuple[str, ...]]], data: dict | None = None) -> dict[str, Plan]:
    """Plan deploy.py for `{name: (host data with fake_responses, groups)}`; `data` overrides group data."""
    names = list(hosts)
    groups: dict[str, tuple[list[str], dict]] = {}
    for name, (_, host_groups) in hosts.items():
        for group in host_groups:
            groups.setdefault(group, ([], {}))[0].append(name)
    inventory = Inventory(
        ([(name, {**FAKE, **hosts[name][0]}) for name in names], group_data()),
        override_data=data or {},
        **groups,
    )
    state = State(check_for_changes=True)
    state.init(inventory, Config())
    old_cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with ctx_state.use(state):
            state.set_stage(StateStage.Connect)
            connect_all(state)
            calls = {name: _record_commands(inventory.get_host(name)) for name in names}
            state.set_stage(StateStage.Prepare)
            with _names_per_host() as named:
                load_deploy_file(state, str(ROOT / "deploy.py"))
            plans = {}
            for name in names:
                ops, conditional = _collect(state, inventory.get_host(name), named)
                executed = [(command, dict(arguments.get("_env") or {})) for command, arguments in calls[name]]
                plans[name] = Plan(ops=ops, conditional=conditional, executed=executed)
            return plans
    finally:
        os.chdir(old_cwd)


@contextmanager
def _names_per_host():
    """{(host, op hash): name}. pyinfra keys an operation by its place in the deploy and merges
    the names every host gave it there; here each host's own name is kept."""
    named: dict[tuple[str, str], str] = {}
    shared = pyinfra_operation.ensure_shared_op_meta

    def recording(state, op_hash, op_order, global_arguments, names):
        named[(context.host.name, op_hash)] = sorted(names)[0].split(" | ")[-1]
        return shared(state, op_hash, op_order, global_arguments, names)

    pyinfra_operation.ensure_shared_op_meta = recording
    try:
        yield named
    finally:
        pyinfra_operation.ensure_shared_op_meta = shared


def _collect(state: State, host, named: dict) -> tuple[list[PlannedOp], list[PlannedOp]]:
    ops, conditional = [], []
    for op_hash in state.get_op_order():
        if op_hash not in state.ops[host]:
            continue
        op_data = state.get_op_data_for_host(host, op_hash)
        if not op_data.operation_meta._maybe_is_change:
            continue
        with ctx_host.use(host):
            commands = [_shown(command) for command in op_data.command_generator()]
        planned = PlannedOp(named[(host.name, op_hash)], commands)
        (conditional if op_data.global_arguments["_if"] else ops).append(planned)
    return ops, conditional


def _shown(command) -> str:
    """A command's text; an upload of an in-memory file (a plist, a unit) with its contents."""
    if isinstance(command, FileUploadCommand) and isinstance(command.src, StringIO):
        return f"upload {command.dest}:\n{command.src.getvalue()}"
    return _text(command)
