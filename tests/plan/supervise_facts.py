"""Scripted facts of supervised programs (tasks/supervise) for @fake hosts.

`converged(programs, os=...)` answers what a host has when every program was
started by kitty-ops and nothing changed since: its plist or unit as rendered,
loaded/running, and a record of what it was started with equal to what its
inputs hold now. Keyword arguments describe departures from that.
"""

from __future__ import annotations

from tasks.supervise import launchd, systemd
from tasks.supervise.decide import sha1_of
from tasks.supervise.program import Program
from tests.plan import launchd_facts


def record_path(records_dir: str, program: Program, os: str) -> str:
    return f"{records_dir}/{program.label if os == 'macos' else program.unit}.started"


def program(
    prog: Program,
    *,
    os: str,
    records_dir: str,
    values: dict[str, str],
    running: bool = True,
    definition: str | None = "same",
    record: dict | None | str = "same",
) -> dict:
    """One program's facts. `values`: each input's value on the host now.

    definition: "same" (as rendered), None (no file) or the text on the host.
    record: "same" (started with the definition as rendered and `values`),
    None (no record), or {"definition": text, "inputs": {name: value}}.
    """
    rendered = launchd.render(prog) if os == "macos" else systemd.render(prog)
    text = rendered if definition == "same" else definition
    path = launchd.plist_path(prog.label) if os == "macos" else systemd.unit_path(prog.unit)
    # pyinfra's FileContents: what the restart table reads to name the changed flags.
    contents = text.splitlines() if text is not None else [f"__pyinfra_missing_{path}"]
    facts = {f"( test -e {path} && cat {path} )": contents}
    if os == "macos":
        facts.update(launchd_facts.job(f"system/{prog.label}", loaded=running))
        facts.update(launchd_facts.file(launchd.plist_path(prog.label), text))
    else:
        unit = prog.unit
        facts.update(launchd_facts.file(systemd.unit_path(unit), text, group="root"))
        facts[f"show --all --property Id --property SubState {unit}"] = [
            f"Id={unit}",
            f"SubState={'running' if running else 'dead'}",
        ]
        facts[f"show --all --property Id --property UnitFileState {unit}"] = [f"Id={unit}", "UnitFileState=enabled"]
    if record == "same":
        record = {"definition": rendered, "inputs": values}
    lines = []
    if record is not None:
        lines += ["has-record", f"record definition {sha1_of(record['definition'])}"]
        lines += [f"record input {name}={value}" for name, value in record["inputs"].items()]
    lines += [f"input {item.name}={values.get(item.name, '')}" for item in prog.inputs]
    facts[f"if [ -f {record_path(records_dir, prog, os)} ]"] = lines
    return facts


def installed(directory: str, prefix: str, names: list[str]) -> dict:
    """The Installed fact of a family: which labels/units of it the host has."""
    suffix = ".plist" if directory.startswith("/Library") else ""
    return {f"for f in {directory}/{prefix}*": [f"{name}{suffix}" for name in names]}


def absent(prog_label: str, unit: str, *, os: str, records_dir: str) -> dict:
    """A declared program that the host does not have at all."""
    if os == "macos":
        facts = launchd_facts.job(f"system/{prog_label}", loaded=False)
        facts.update(launchd_facts.file(launchd.plist_path(prog_label), None))
        facts[f"if [ -f {records_dir}/{prog_label}.started ]"] = []
    else:
        facts = launchd_facts.file(systemd.unit_path(unit), None)
        facts[f"show --all --property Id --property SubState {unit}"] = []
        facts[f"if [ -f {records_dir}/{unit}.started ]"] = []
    return facts
