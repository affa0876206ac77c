"""The one decision table both supervisors follow, and the record it is decided against.

    declared, enabled   nothing on the host           -> install (write, start)
                        defined but not running       -> start
                        definition differs            -> reload (write, restart once)
                        inputs differ from the record -> restart once
                        no record (older kitty-ops)   -> record what runs, no restart
                        all the same                  -> nothing
    disabled / not declared, anything on the host     -> remove (stop, delete)

The record (`<opt_dir>/state/supervise/<label>.started`) says what the running
process was started with: the sha1 of its plist/unit and the value of each
input (the build `current` pointed at, each model file's stamp). It is written
after every (re)start, from what the host has at that moment, so a converge
that stops halfway (after `current` moved, before the restarts) is finished by
the next one: the record still names the old build.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from hashlib import sha1
from typing import Literal

from pyinfra.api import FactBase

from tasks.supervise.program import Input, Program

Action = Literal["install", "start", "reload", "restart", "record", "none", "remove"]
# Actions after which a new process runs.
STARTS = ("install", "start", "reload", "restart")
# The value of an input this converge replaces, before it is replaced.
REPLACED = "(replaced in this run)"


@dataclass(frozen=True)
class Decision:
    name: str
    action: Action
    reasons: tuple[str, ...] = ()
    # The inputs whose value differs from the record (a restart's cause): `llama.cpp`, `model ...`.
    changed: tuple[str, ...] = ()

    @property
    def starts(self) -> bool:
        return self.action in STARTS

    @property
    def changes(self) -> bool:
        return self.action != "none"

    @property
    def will_change(self) -> bool:
        # As pyinfra's OperationMeta says it: a step that waits on what changed takes either.
        return self.changes


@dataclass(frozen=True)
class Observed:
    """What the host has for one program: from the supervisor, its definition file and its record."""

    running: bool
    definition_sha1: str | None
    record: dict | None
    inputs_now: dict[str, str]


def sha1_of(text: str) -> str:
    return sha1(text.encode()).hexdigest()


def decide(
    program: Program | None, name: str, definition: str | None, observed: Observed, *, planning: bool
) -> Decision:
    """What to do with one program. `planning`: predict from the inputs' `wanted`/`replaced`;
    while executing, the host already has what earlier operations did, so its values are the truth."""
    if program is None or definition is None:
        if observed.running or observed.definition_sha1 or observed.record is not None:
            return Decision(name, "remove", ("disabled or no longer declared",))
        return Decision(name, "none", ("absent",))

    wanted_sha1 = sha1_of(definition)
    if observed.definition_sha1 is None and not observed.running:
        return Decision(name, "install", ("new",))
    if not observed.running:
        return Decision(name, "start", ("not running",))
    if observed.definition_sha1 != wanted_sha1:
        return Decision(name, "reload", ("its definition changed",))
    if observed.record is None:
        return Decision(name, "record", ("no record of what it was started with: recorded, not restarted",))

    reasons, changed = [], []
    if observed.record.get("definition") != wanted_sha1:
        reasons.append("started from an older definition (a converge stopped halfway)")
    started_with = observed.record.get("inputs", {})
    for item in program.inputs:
        now = _expected(item, observed.inputs_now.get(item.name, ""), planning)
        before = started_with.get(item.name)
        if now != before:
            reasons.append(_reason(item, before, now))
            changed.append(item.name)
    if reasons:
        return Decision(name, "restart", tuple(reasons), tuple(changed))
    return Decision(name, "none", ("up to date",))


def _expected(item: Input, now: str, planning: bool) -> str:
    if not planning:
        return now
    if item.wanted is not None:
        return item.wanted
    return REPLACED if item.replaced else now


def _reason(item: Input, before: str | None, now: str) -> str:
    if now == REPLACED:
        return f"{item.name} replaced"
    if item.kind == "link":
        return f"{item.name} {_short(before)} → {_short(now)}"
    return f"{item.name} changed"


def _short(value: str | None) -> str:
    return value.rstrip("/").rsplit("/", 1)[-1] if value else "(none)"


# --- On the host --------------------------------------------------------------------------


def where(inputs: tuple[Input, ...]) -> list[tuple[str, str, str]]:
    """(name, kind, path) of each input: what the fact and the record read, as plain values."""
    return [(item.name, item.kind, item.path) for item in inputs]


def inputs_script(inputs: list[tuple[str, str, str]]) -> str:
    """POSIX sh printing `input NAME=VALUE` per input: the same lines for the fact and for the record."""
    lines = []
    for name, kind, path in inputs:
        read = "readlink" if kind == "link" else "head -n 1"
        value = f'"$({read} {shlex.quote(path)} 2>/dev/null)"'
        lines.append(f"printf 'input %s=%s\\n' {shlex.quote(name)} {value}")
    return "; ".join(lines) if lines else ":"


def write_record(record: str, definition: str, inputs: tuple[Input, ...]) -> str:
    """Record what the program now runs, from what the host has at this moment (after the (re)start)."""
    path = shlex.quote(record)
    folder = shlex.quote(record.rsplit("/", 1)[0])
    return (
        f"mkdir -p {folder} && {{ printf 'definition %s\\n' {sha1_of(definition)}; {inputs_script(where(inputs))}; }} "
        f"> {path}.tmp && mv -f {path}.tmp {path}"
    )


class ProgramRecord(FactBase):
    """The record of what a program was started with, and its inputs' values now.

    {"record": {"definition": "<sha1>", "inputs": {name: value}} or None, "inputs_now": {name: value}}
    """

    def command(self, record: str, inputs: list[tuple[str, str, str]] | None = None) -> str:
        path = shlex.quote(record)
        return f"if [ -f {path} ]; then echo has-record; sed 's/^/record /' {path}; fi; {inputs_script(inputs or [])}"

    @staticmethod
    def default() -> dict:
        return {"record": None, "inputs_now": {}}

    def process(self, output) -> dict:
        found = self.default()
        for line in output:
            line = line.rstrip("\n")
            if line == "has-record":
                found["record"] = {"definition": None, "inputs": {}}
            elif line.startswith("record definition "):
                found["record"]["definition"] = line.split(" ", 2)[2].strip()
            elif line.startswith("record input "):
                key, _, value = line[len("record input ") :].partition("=")
                found["record"]["inputs"][key] = value
            elif line.startswith("input "):
                key, _, value = line[len("input ") :].partition("=")
                found["inputs_now"][key] = value
        return found


# --- What ran before, for a rollback --------------------------------------------------------
#
# Before each (re)start the operation keeps the record and the definition file
# the program ran with, next to the record. When the program does not become
# healthy, the health wait puts them back (tasks/supervise/health.py), so the host is
# left as it was: definition, links and record, and a converge with the
# previous configuration finds nothing to do.


def previous_record(record: str) -> str:
    return f"{record}.previous"


def previous_definition(record: str) -> str:
    return f"{record}.previous-definition"


def keep_previous(record: str, definition_path: str) -> str:
    """Copy the record and definition the program runs with now; no copy where there is none (a first install)."""
    pairs = [(record, previous_record(record)), (definition_path, previous_definition(record))]
    return "; ".join(
        f"if [ -f {shlex.quote(src)} ]; then cp -p {shlex.quote(src)} {shlex.quote(dst)}; "
        f"else rm -f {shlex.quote(dst)}; fi"
        for src, dst in pairs
    )


def forget_previous(record: str) -> list[str]:
    return [previous_record(record), previous_definition(record)]


def restore_record(record: str) -> str:
    """The record back to what the previous process was started with (none: none)."""
    prev, path = shlex.quote(previous_record(record)), shlex.quote(record)
    return f"if [ -f {prev} ]; then mv -f {prev} {path}; else rm -f {path}; fi"


def restore_links(record: str, inputs: tuple[Input, ...], names: tuple[str, ...]) -> list[str]:
    """Point each changed link input (`current`) back where the previous record says it pointed."""
    commands = []
    prev = shlex.quote(previous_record(record))
    for item in inputs:
        if item.kind != "link" or item.name not in names:
            continue
        key = shlex.quote(f"s/^input {item.name}=//p")
        commands.append(
            f'was=$(sed -n {key} {prev} 2>/dev/null); if [ -n "$was" ] && [ -d "$was" ]; then '
            f'ln -sfn "$was" {shlex.quote(item.path)}; '
            f'else echo "no previous {item.name} to go back to" >&2; exit 1; fi'
        )
    return commands
