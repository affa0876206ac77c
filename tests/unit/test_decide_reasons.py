"""What the decision table says about a changed input, and which links a rollback puts back.

The restart table and the health wait show these words to the operator; the
rollback commands run on the host (tests/unit/test_record_round_trip.py runs
them). Here the edges: a record from before an input existed, link values
with a trailing slash or without any, a file input among the changed names.
"""

from __future__ import annotations

import pytest

from tasks.supervise.decide import Decision, Observed, decide, restore_links, sha1_of
from tasks.supervise.program import Input, Program

CURRENT = Input("llama.cpp", "/opt/kitty/llama.cpp/current", "link")
STAMP = Input("model m/a.gguf", "/models/m/.kitty/a.gguf.stamp", "file")
DEFINITION = "[Service]\nExecStart=/opt/kitty/llama.cpp/current/bin/llama-server\n"


def program(*inputs: Input) -> Program:
    return Program("server q4", "label", "kitty-llama-q4.service", "q4", [], "/log", "/opt", inputs=inputs)


def restart_reasons(before: dict[str, str], now: dict[str, str], *inputs: Input) -> tuple[str, ...]:
    record = {"definition": sha1_of(DEFINITION), "inputs": before}
    observed = Observed(running=True, definition_sha1=sha1_of(DEFINITION), record=record, inputs_now=now)
    decision = decide(program(*inputs), "server q4", DEFINITION, observed, planning=False)
    assert decision.action == "restart"
    return decision.reasons


def test_a_link_the_record_does_not_name_says_none():
    """A record written before the input existed (an older kitty-ops)."""
    assert restart_reasons({}, {"llama.cpp": "/opt/kitty/llama.cpp/builds/b2"}, CURRENT) == ("llama.cpp (none) → b2",)


def test_link_values_are_named_by_their_last_folder_with_or_without_a_slash():
    before, now = {"llama.cpp": "/opt/kitty/llama.cpp/builds/b1/"}, {"llama.cpp": "b2"}
    assert restart_reasons(before, now, CURRENT) == ("llama.cpp b1 → b2",)


def test_a_file_input_is_said_to_have_changed():
    assert restart_reasons({"model m/a.gguf": "x 1 2"}, {"model m/a.gguf": "y 1 2"}, STAMP) == (
        "model m/a.gguf changed",
    )


@pytest.mark.parametrize(
    ("running", "definition_sha1", "record"),
    [(True, None, None), (False, "0" * 40, None), (False, None, {"definition": None, "inputs": {}})],
    ids=["only-running", "only-its-unit", "only-its-record"],
)
def test_anything_of_an_undeclared_program_left_on_the_host_is_removed(running, definition_sha1, record):
    observed = Observed(running=running, definition_sha1=definition_sha1, record=record, inputs_now={})
    decision = decide(None, "kitty-llama-old.service", None, observed, planning=True)
    assert decision == Decision("kitty-llama-old.service", "remove", ("disabled or no longer declared",))


def test_an_undeclared_program_the_host_does_not_have_is_left_alone():
    observed = Observed(running=False, definition_sha1=None, record=None, inputs_now={})
    assert decide(None, "kitty-llama-old.service", None, observed, planning=True) == Decision(
        "kitty-llama-old.service", "none", ("absent",)
    )


@pytest.mark.parametrize(
    ("running", "definition", "record", "expected"),
    [
        (False, None, None, ("install", ("new",))),
        (False, DEFINITION, None, ("start", ("not running",))),
        (True, "[Service]\n", None, ("reload", ("its definition changed",))),
        (True, DEFINITION, None, ("record", ("no record of what it was started with: recorded, not restarted",))),
        (True, DEFINITION, {"definition": sha1_of(DEFINITION), "inputs": {}}, ("none", ("up to date",))),
    ],
    ids=["install", "start", "reload", "record", "none"],
)
def test_each_row_of_the_table_names_the_program_and_says_why(running, definition, record, expected):
    """The operation's name and the restart table print these words."""
    definition_sha1 = sha1_of(definition) if definition else None
    observed = Observed(running=running, definition_sha1=definition_sha1, record=record, inputs_now={})
    assert decide(program(), "server q4", DEFINITION, observed, planning=False) == Decision("server q4", *expected)


def test_a_rollback_puts_back_only_changed_links_whatever_their_order():
    record = "/opt/kitty/state/supervise/q4.started"
    inputs = (STAMP, CURRENT)
    # A changed file is fetched again, not put back: only the link gets a command.
    [command] = restore_links(record, inputs, ("model m/a.gguf", "llama.cpp"))
    assert "ln -sfn" in command and CURRENT.path in command and "s/^input llama.cpp=//p" in command
    assert restore_links(record, inputs, ("model m/a.gguf",)) == []
