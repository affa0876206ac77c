"""run_with_progress (tasks/engine/operations.py) runs its command with the operation's connector
arguments, as a shell command of the operation would: pyinfra gives a FunctionCommand none
of them. Against pyinfra's real @local connector."""

from __future__ import annotations

from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.operation import add_op
from pyinfra.api.operations import run_ops
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_state

from tasks.engine.operations import run_with_progress


def test_the_operations_chdir_and_env_reach_the_command(tmp_path):
    inventory = Inventory((["@local"], {}))
    state = State(check_for_changes=True)
    state.init(inventory, Config())
    workdir = tmp_path / "work"
    workdir.mkdir()
    with ctx_state.use(state):
        state.set_stage(StateStage.Connect)
        connect_all(state)
        state.set_stage(StateStage.Prepare)
        add_op(
            state,
            run_with_progress,
            name="write where and what",
            command=["sh", "-c", 'pwd > where; printf "%s %s" "$FROM_OP" "$FROM_CALL" > what'],
            env={"FROM_CALL": "call"},
            _chdir=str(workdir),
            _env={"FROM_OP": "op", "FROM_CALL": "overridden"},
        )
        state.set_stage(StateStage.Execute)
        run_ops(state)
    assert (workdir / "where").read_text().strip() == str(workdir)
    assert (workdir / "what").read_text() == "op call"
