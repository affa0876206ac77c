"""The per-converge fact cache (tasks/engine/fact_cache.py), against pyinfra's real @local connector.

Each read of the fact below runs a real command that appends to a file and prints how
many times it ran, so a test sees exactly how often the host was asked.
"""

from __future__ import annotations

import shlex

import pytest
from pyinfra.api import Config, FactBase, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state

from tasks.engine.fact_cache import install_fact_cache
from tasks.system.prerequisites_facts import has_pinned_distribution


class Reads(FactBase):
    """How many times this fact's command has run (for `path`), and a dict to tamper with."""

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return f"echo read >> {quoted}; wc -l < {quoted}"

    def process(self, output) -> dict:
        return {"reads": int("".join(output).strip()), "seen": []}


@pytest.fixture
def local(tmp_path):
    assert install_fact_cache()
    inventory = Inventory((["@local"], {}))
    state = State(check_for_changes=True)
    state.init(inventory, Config())
    with ctx_state.use(state):
        state.set_stage(StateStage.Connect)
        connect_all(state)
        host = inventory.get_host("@local")
        with ctx_host.use(host):
            state.set_stage(StateStage.Prepare)
            yield state, host, str(tmp_path / "reads")


def test_a_fact_is_read_once_while_operations_are_planned(local):
    _, host, path = local
    assert host.get_fact(Reads, path=path)["reads"] == 1
    assert host.get_fact(Reads, path=path)["reads"] == 1
    # Other arguments: another fact.
    assert host.get_fact(Reads, path=path + "-other")["reads"] == 1


def test_an_answer_edited_by_its_caller_is_not_what_the_next_caller_gets(local):
    _, host, path = local
    host.get_fact(Reads, path=path)["seen"].append("planned change")
    assert host.get_fact(Reads, path=path)["seen"] == []


def test_run_as_another_user_is_another_read(local):
    _, host, path = local
    assert host.get_fact(Reads, path=path)["reads"] == 1
    # Same command, other connector arguments (an environment here: sudo is not at hand in CI).
    assert host.get_fact(Reads, path=path, _env={"KITTY_X": "1"})["reads"] == 2


def test_at_execution_the_planned_answer_holds_until_something_runs_on_the_host(local):
    state, host, path = local
    assert host.get_fact(Reads, path=path)["reads"] == 1
    state.set_stage(StateStage.Execute)
    # Nothing has run: the operation sees the state it was planned from.
    assert host.get_fact(Reads, path=path)["reads"] == 1
    # An operation's command ran: the host may have changed, the fact is read again.
    host.run_shell_command("true")
    assert host.get_fact(Reads, path=path)["reads"] == 2
    assert host.get_fact(Reads, path=path)["reads"] == 2


@pytest.mark.parametrize(
    ("installed", "requirement", "expected"),
    [
        (["huggingface_hub-2.4.0.dist-info"], "huggingface_hub==2.4.0", True),
        (["huggingface_hub-2.4.0.dist-info"], "huggingface-hub == 2.4.0", True),
        (["Huggingface_Hub-2.4.0.dist-info"], "huggingface.hub==2.4.0", True),
        (["huggingface_hub-2.4.0.dist-info"], "huggingface_hub==2.4.1", False),
        (["huggingface_hub-2.4.0.dist-info"], "huggingface_hub>=2.4.0", False),
        (["huggingface_hub-2.4.0.dist-info"], "huggingface_hub[cli]==2.4.0", False),
        ([], "huggingface_hub==2.4.0", False),
    ],
)
def test_a_pinned_package_already_installed_needs_no_pip(installed, requirement, expected):
    assert has_pinned_distribution(installed, requirement) is expected
