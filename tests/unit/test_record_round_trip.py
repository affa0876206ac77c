"""The record of what a supervised program was started with, round trip through a real shell.

The record is written on the host by a shell command (`write_record`), read
back by a fact (`ProgramRecord`), and only then decided on (`decide`). The
plan tests script the fact's answer by hand, so a writer and a reader that
drift apart would pass them and restart every server on every host (or trust
a stale record). Here the writer's command runs under dash and under busybox
sh with busybox's applets as the only userland (macOS runs them with its
/bin/sh), on a host laid out in a temporary folder: the `current` link, model
stamps, the unit file. What it wrote is read back by the fact's own command,
then fed to the decision table for every one of its rows. The record's text
itself is pinned: records written by an earlier kitty-ops sit on every host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pyinfra.facts.files import Sha1File

from tasks import config
from tasks.host import layout
from tasks.inference import servers
from tasks.supervise import decide as table
from tasks.supervise import systemd
from tasks.supervise.program import Program
from tests.plan.harness import simulated_platform
from tests.tools import busybox_path, require
from tests.unit.data import host_data

SERVER = "vision"  # two model files (weights and projector): two file inputs besides the link
LINUX = simulated_platform("linux", "admin", "x86_64")


class Host:
    """A host in a folder: what the program's inputs point at, its unit file, and a shell to run commands."""

    def __init__(self, root: Path, shell: str):
        self.root = root
        self.shell = shell
        self.cfg = config.load(
            host_data(kitty_paths__opt_dir=str(root / "opt"), kitty_paths__models_dir=str(root / "models"))
        )
        self.srv = self.cfg.servers[SERVER]
        self.builds = root / "opt" / "llama.cpp" / "builds"
        for build in ("b1", "b2"):
            (self.builds / build / "bin").mkdir(parents=True)
        self.point_current_at("b1")
        for item in self.program().inputs:
            if item.kind == "file":
                self.stamp(item.name, f"{'a' * 64} 1000 1700000000")
        self.unit = root / "etc" / "systemd" / "system" / self.program().unit
        self.record = f"{layout.records_dir(self.cfg)}/{self.program().unit}.started"
        self.env = {"LC_ALL": "C", "HOME": str(root)}
        if shell == "busybox":
            self.argv = [shutil.which("busybox"), "sh", "-c"]
            self.env["PATH"] = busybox_path(root / "busybox-only")
        else:
            self.argv = [shutil.which(shell), "-c"]
            self.env["PATH"] = "/usr/bin:/bin"

    def program(self, build: str = "b1", **changes):
        srv = self.srv.model_copy(update=changes) if changes else self.srv
        return servers.program(self.cfg, LINUX, SERVER, srv, build)

    def point_current_at(self, build: str) -> None:
        current = self.root / "opt" / "llama.cpp" / "current"
        current.unlink(missing_ok=True)
        current.symlink_to(self.builds / build)

    def stamp(self, name: str, line: str) -> None:
        path = Path(next(item.path for item in self.program().inputs if item.name == name))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(line + "\n")

    def install_unit(self, text: str) -> None:
        # As files.put writes it: the rendered text, byte for byte.
        self.unit.parent.mkdir(parents=True, exist_ok=True)
        self.unit.write_text(text)

    def sh(self, command: str) -> list[str]:
        done = subprocess.run([*self.argv, command], env=self.env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{self.shell}: {command}\n{done.stderr}"
        return done.stdout.splitlines()

    def write_record(self, definition: str) -> None:
        self.sh(table.write_record(self.record, definition, self.program().inputs))

    def observe(self, running: bool = True, program=None) -> table.Observed:
        """What the backends observe (systemd.observe), every value read on this host by the fact's command."""
        program = program or self.program()
        fact = table.ProgramRecord()
        state = fact.process(self.sh(fact.command(record=self.record, inputs=table.where(program.inputs))))
        sha1 = Sha1File()
        lines = self.sh(sha1.command(path=str(self.unit)).get_raw_value())
        return table.Observed(
            running=running,
            definition_sha1=sha1.process(lines) if lines else None,
            record=state["record"],
            inputs_now=state["inputs_now"],
        )

    def decide(self, running: bool = True, program=None, planning: bool = False, declared: bool = True):
        program = program or self.program()
        definition = systemd.render(program) if declared else None
        return table.decide(program if declared else None, program.name, definition, self.observe(running, program),
                      planning=planning)  # fmt: skip


@pytest.fixture(params=["dash", "busybox"])
def host(request, tmp_path) -> Host:
    require(request.param)
    return Host(tmp_path, request.param)


@pytest.fixture
def converged(host) -> Host:
    """Started by a converge: unit installed, record written after the start."""
    definition = systemd.render(host.program())
    host.install_unit(definition)
    host.write_record(definition)
    return host


def inputs_of(host: Host) -> dict[str, str]:
    return {item.name: item for item in host.program().inputs}


# --- The record's text: what an earlier kitty-ops left on every host ------------------------


def test_the_record_is_one_definition_line_then_one_line_per_input(converged):
    assert Path(converged.record).read_text() == (
        f"definition {table.sha1_of(systemd.render(converged.program()))}\n"
        f"input llama.cpp={converged.builds}/b1\n"
        f"input model gemma-3-27b-it-GGUF/google_gemma-3-27b-it-Q4_K_M.gguf={'a' * 64} 1000 1700000000\n"
        f"input model gemma-3-27b-it-GGUF/mmproj-google_gemma-3-27b-it-bf16.gguf={'a' * 64} 1000 1700000000\n"
    )
    assert not Path(converged.record + ".tmp").exists()


def test_a_record_in_the_pinned_format_reads_back_as_what_it_says(host):
    """A record as written by kitty-ops since records exist, read by the fact's command on the host."""
    Path(host.record).parent.mkdir(parents=True)
    Path(host.record).write_text(
        "definition 0123456789abcdef0123456789abcdef01234567\n"
        "input llama.cpp=/opt/x/builds/b1-MAX\n"
        "input model m/a b.gguf=s 1 2\n"
    )
    observed = host.observe()
    assert observed.record == {
        "definition": "0123456789abcdef0123456789abcdef01234567",
        "inputs": {"llama.cpp": "/opt/x/builds/b1-MAX", "model m/a b.gguf": "s 1 2"},
    }


def test_a_program_without_inputs_is_recorded_and_read_back(host):
    """The images service and colima's VM depend on nothing but their definition."""
    program = Program("images api", "com.kitty.images.api", "kitty-images-api.service", "api", ["/bin/true"], "/l", "/")
    definition = systemd.render(program)
    host.sh(table.write_record(host.record, definition, program.inputs))
    fact = table.ProgramRecord()
    state = fact.process(host.sh(fact.command(record=host.record, inputs=table.where(program.inputs))))
    assert state == {"record": {"definition": table.sha1_of(definition), "inputs": {}}, "inputs_now": {}}


def test_what_was_written_reads_back_equal_to_what_the_inputs_hold_now(converged):
    observed = converged.observe()
    assert observed.definition_sha1 == table.sha1_of(systemd.render(converged.program()))
    assert observed.record["definition"] == observed.definition_sha1
    assert observed.record["inputs"] == observed.inputs_now
    assert observed.inputs_now["llama.cpp"] == f"{converged.builds}/b1"
    assert len(observed.inputs_now) == len(converged.program().inputs) == 3


# --- Every row of the decision table, from what the host has -------------------------------


def test_a_value_is_everything_after_the_first_equals_sign(host):
    """A build folder with `=` in its name: read back whole, or every converge would restart the server."""
    (host.builds / "b=1" / "bin").mkdir(parents=True)
    host.point_current_at("b=1")
    definition = systemd.render(host.program("b=1"))
    host.install_unit(definition)
    host.write_record(definition)
    observed = host.observe(program=host.program("b=1"))
    assert observed.record["inputs"]["llama.cpp"] == observed.inputs_now["llama.cpp"] == f"{host.builds}/b=1"
    assert host.decide(program=host.program("b=1")).action == "none"


def test_all_the_same_decides_nothing(converged):
    decision = converged.decide()
    assert (decision.action, decision.reasons) == ("none", ("up to date",))


def test_nothing_on_the_host_decides_install(host):
    assert host.decide(running=False).action == "install"


def test_defined_but_not_running_decides_start(converged):
    assert converged.decide(running=False).action == "start"


def test_a_different_definition_on_the_host_decides_reload(converged):
    converged.install_unit(systemd.render(converged.program(ctx_size=converged.srv.ctx_size * 2)))
    decision = converged.decide()
    assert (decision.action, decision.reasons) == ("reload", ("its definition changed",))


def test_running_without_a_record_decides_record_not_restart(converged):
    Path(converged.record).unlink()
    assert converged.decide().action == "record"


def test_started_from_an_older_definition_decides_restart(converged):
    """A converge that wrote the new unit and stopped before the restart: the record names the old unit."""
    converged.write_record(systemd.render(converged.program(ctx_size=converged.srv.ctx_size * 2)))
    decision = converged.decide()
    assert decision.action == "restart"
    assert decision.reasons == ("started from an older definition (a converge stopped halfway)",)
    assert decision.changed == ()


def test_current_moved_since_the_start_decides_restart_naming_both_builds(converged):
    converged.point_current_at("b2")
    decision = converged.decide()
    assert (decision.action, decision.reasons, decision.changed) == ("restart", ("llama.cpp b1 → b2",), ("llama.cpp",))


def test_a_model_stamp_changed_since_the_start_decides_restart_naming_the_file(converged):
    name = next(name for name in inputs_of(converged) if name.startswith("model gemma-3-27b-it-GGUF/mmproj-"))
    converged.stamp(name, f"{'b' * 64} 1000 1700000001")
    decision = converged.decide()
    assert (decision.action, decision.reasons, decision.changed) == ("restart", (f"{name} changed",), (name,))


def test_planned_with_a_new_build_decides_restart_before_current_moves(converged):
    """At plan time `current` still points at b1; the program says the converge moves it to b2."""
    decision = converged.decide(program=converged.program("b2"), planning=True)
    assert (decision.action, decision.changed) == ("restart", ("llama.cpp",))
    assert decision.reasons == ("llama.cpp b1 → b2",)


def test_disabled_with_its_unit_and_record_on_the_host_decides_remove(converged):
    assert converged.decide(declared=False).action == "remove"


def test_a_record_left_alone_is_enough_to_decide_remove(converged):
    converged.unit.unlink()
    assert converged.decide(running=False, declared=False).action == "remove"


def test_disabled_and_nothing_on_the_host_decides_nothing(host):
    assert host.decide(running=False, declared=False).action == "none"


# --- The rollback: the previous record and links put back ---------------------------------


def test_a_rollback_puts_back_the_link_and_the_record_and_then_nothing_is_to_do(converged):
    before = Path(converged.record).read_text()
    definition = systemd.render(converged.program())
    # The converge: keep what runs, move current, restart, record.
    converged.sh(table.keep_previous(converged.record, str(converged.unit)))
    converged.point_current_at("b2")
    converged.write_record(definition)
    assert converged.decide(program=converged.program("b2")).action == "none"
    # The new build does not serve: the health wait puts the previous one back.
    for command in table.restore_links(converged.record, converged.program().inputs, ("llama.cpp",)):
        converged.sh(command)
    converged.sh(table.restore_record(converged.record))
    assert os.readlink(converged.root / "opt" / "llama.cpp" / "current") == f"{converged.builds}/b1"
    assert Path(converged.record).read_text() == before
    assert converged.decide().action == "none"


def test_what_runs_is_kept_beside_the_record_where_removal_finds_it(converged):
    record_text, unit_text = Path(converged.record).read_text(), converged.unit.read_text()
    converged.sh(table.keep_previous(converged.record, str(converged.unit)))
    kept = [table.previous_record(converged.record), table.previous_definition(converged.record)]
    assert [Path(path).read_text() for path in kept] == [record_text, unit_text]
    # What a removal deletes (the backends' "remove") is exactly what was kept.
    assert table.forget_previous(converged.record) == kept


def test_a_rollback_of_a_first_install_leaves_no_record(host):
    definition = systemd.render(host.program())
    # Left by an earlier converge's rollback of another program version: not what runs now.
    Path(table.previous_record(host.record)).parent.mkdir(parents=True)
    Path(table.previous_record(host.record)).write_text("definition stale\n")
    host.sh(table.keep_previous(host.record, str(host.unit)))
    assert not Path(table.previous_record(host.record)).exists()
    host.install_unit(definition)
    host.write_record(definition)
    host.sh(table.restore_record(host.record))
    assert not Path(host.record).exists()
    assert host.decide(running=False).action == "start"


def test_restore_links_refuses_when_the_previous_build_is_gone(converged):
    converged.sh(table.keep_previous(converged.record, str(converged.unit)))
    (converged.builds / "b1" / "bin").rmdir()
    (converged.builds / "b1").rmdir()
    [command] = table.restore_links(converged.record, converged.program().inputs, ("llama.cpp",))
    done = subprocess.run([*converged.argv, command], env=converged.env, capture_output=True, text=True)
    assert done.returncode == 1 and "no previous llama.cpp to go back to" in done.stderr
