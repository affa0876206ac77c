"""Fixtures shared by the plan tests."""

import pytest
from pyinfra.context import ctx_host

from tests.plan import harness


@pytest.fixture
def planned(monkeypatch):
    """Each planned operation's global arguments (_sudo, _sudo_user, ...) and raw commands, by name.

    "No sudo" is asserted on these, not on the command text: pyinfra adds sudo
    later, in the connector, so the planned text never shows it.
    """
    details = {}
    collect = harness._collect

    def recording_collect(state, host):
        for op_hash in state.get_op_order():
            if op_hash not in state.ops[host]:
                continue
            op_data = state.get_op_data_for_host(host, op_hash)
            with ctx_host.use(host):
                commands = list(op_data.command_generator())
            name = sorted(state.op_meta[op_hash].names)[0].split(" | ")[-1]
            details[name] = (op_data.global_arguments, commands)
        return collect(state, host)

    monkeypatch.setattr(harness, "_collect", recording_collect)
    return details
