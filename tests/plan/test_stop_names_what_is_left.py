"""stop.py executed on a simulated host where something is left: the table and the failure name it.

"stopped" with no word of what still listens, or "none left" while a server
runs, would send an operator to a host they believe is quiet.
"""

from __future__ import annotations

import logging

from tests.plan.test_stop import OPT, execute, linux

SERVER = f"{OPT}/llama.cpp/builds/b11434-cpu-4be4a2a5f7/bin/llama-server"


def said(caplog) -> list[str]:
    return [record.getMessage().split("] ", 1)[-1].strip() for record in caplog.records]


def test_a_port_still_held_is_named_in_the_table_and_in_the_failure(caplog):
    facts = {
        "ss -ltnpH": ['LISTEN 0 128 127.0.0.1:8083 0.0.0.0:* users:(("llama-server",pid=777,fd=3))'],
        **linux(stack="exited"),
    }
    with caplog.at_level(logging.INFO):
        error = execute(facts).error
    assert error is not None
    lines = said(caplog)
    row = next(line for line in lines if line.startswith("port 8083 (server q4)"))
    assert row.endswith("still held by PID 777 (llama-server)")
    assert "port 8083 (server q4) is still held by PID 777 (llama-server)" in lines
    # The other ports are free, and say so.
    assert any(line.startswith("port 8085 (server summary)") and line.endswith("free") for line in lines)


def test_a_kitty_process_left_is_counted_in_the_table_and_named_in_the_failure(caplog):
    facts = {"ps -A -o pid= -o args=": [f" 4242 {SERVER} --port 9999"], **linux(stack="exited")}
    with caplog.at_level(logging.INFO):
        error = execute(facts).error
    assert error is not None
    lines = said(caplog)
    assert any(line.startswith("KITTY processes") and line.endswith("1 left") for line in lines)
    assert f"PID 4242 is still running: {SERVER} --port 9999" in lines


def test_nothing_left_says_none_left_and_every_port_free(caplog):
    with caplog.at_level(logging.INFO):
        error = execute(linux(stack="exited")).error
    assert error is None
    lines = said(caplog)
    assert any(line.startswith("KITTY processes") and line.endswith("none left") for line in lines)
    assert not any("still held" in line for line in lines)
