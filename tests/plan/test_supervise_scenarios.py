"""The model servers' restart decisions, planned for simulated Macs (launchd) and Linux hosts (systemd).

The same scenarios, on both supervisors, must give the same set of
(re)starts, each at most once, derived inside the supervisor operation
(tasks/supervise) from what changed: the host's definition file, its
supervisor's state, and the record of what each server was started with.
tests/macsim and tests/e2e run the same scenarios for real.
"""

from __future__ import annotations

import copy
import logging
import re

import pytest

from tasks import config
from tasks.host import layout
from tasks.inference import servers
from tests.plan import hosts, inference_facts, supervise_facts
from tests.plan.harness import group_data, plan, simulated_platform

DEFAULTS = group_data()
OSES = ["macos", "linux"]
INFERENCE = ("inference",)
ENABLED = [name for name, s in DEFAULTS["kitty_servers"].items() if s.get("enabled", True)]


def converged(os: str) -> dict:
    return hosts.macos_converged() if os == "macos" else hosts.linux_converged()


def platform(os: str):
    return simulated_platform(os, "admin", "arm64" if os == "macos" else "x86_64")


def with_servers(**changes) -> dict:
    servers_ = copy.deepcopy(DEFAULTS["kitty_servers"])
    for name, change in changes.items():
        if change is None:
            del servers_[name]
        else:
            servers_[name].update(change)
    return {"kitty_servers": servers_}


def actions(result) -> dict[str, str]:
    """`{"q4": "restart", ...}` for every server whose supervisor operation changes something."""
    found = {}
    for op in result.ops + result.conditional:
        match = re.match(r"server (\S+): (\w+)", op.name) or re.match(
            rf"({re.escape(DEFAULTS['kitty_launchd']['label_prefix'])}|kitty-llama-)(\S+?)(\.service)?: stop", op.name
        )
        if not match:
            continue
        name = match.group(1) if op.name.startswith("server ") else match.group(2)
        assert name not in found, f"{name} has two supervisor operations: {found[name]} and {op.name}"
        found[name] = "remove" if ": stop and remove" in op.name else match.group(2)
    return found


def supervisor_commands(result) -> list[str]:
    """launchctl/systemctl commands the operations run (not the health wait's CHECKs and rollbacks)."""
    return [
        c
        for op in result.ops
        for c in op.commands
        if ("launchctl" in c or "systemctl" in c) and not c.startswith("FunctionCommand(")
    ]


def restart_table(caplog) -> list[str]:
    """The restart table the plan printed, one line each, without the host prefix."""
    start = [i for i, r in enumerate(caplog.records) if r.getMessage().split("] ", 1)[-1].startswith("program ")]
    assert start, "no restart table printed"
    lines = [r.getMessage().split("] ", 1)[-1] for r in caplog.records[start[-1] :]]
    end = next(i for i, line in enumerate(lines) if "will restart" in line or "will (re)start" in line)
    return lines[: end + 1]


def row(table: list[str], name: str) -> str:
    (found,) = [line for line in table if line.startswith(name + " ")]
    return " ".join(found.split())


@pytest.mark.parametrize("os", OSES)
def test_a_converged_host_restarts_nothing(os):
    result = plan(converged(os), groups=INFERENCE)
    assert actions(result) == {}
    assert result.ops == []


@pytest.mark.parametrize("os", OSES)
def test_one_flag_on_one_server_reloads_that_server_only(os):
    data = with_servers(summary={"ctx_size": 4096})
    assert actions(plan(converged(os), data=data, groups=INFERENCE)) == {"summary": "reload"}


@pytest.mark.parametrize("os", OSES)
def test_a_new_llamacpp_ref_restarts_every_server_once(os):
    data = {"kitty_llamacpp": {**DEFAULTS["kitty_llamacpp"], "ref": "b11500"}}
    result = plan(converged(os), data=data, groups=INFERENCE)
    assert actions(result) == dict.fromkeys(ENABLED, "restart")
    if os == "macos":
        # bootout (SIGTERM, the job's ExitTimeOut), then bootstrap: never kickstart -k's SIGKILL.
        assert not [c for c in supervisor_commands(result) if "kickstart" in c]
        outs = [c for c in supervisor_commands(result) if "launchctl bootout" in c]
        ins = [c for c in supervisor_commands(result) if "launchctl bootstrap" in c]
        assert [c.split("bootout ")[1].split()[0] for c in outs] == [
            f"system/com.kitty.llama-server.{n}" for n in ENABLED
        ]
        assert len(ins) == len(ENABLED)
    else:
        assert [c for c in supervisor_commands(result) if "restart" in c] == [
            f"systemctl restart kitty-llama-{n}.service" for n in ENABLED
        ]


@pytest.mark.parametrize("os", OSES)
def test_a_replaced_model_file_restarts_the_servers_that_use_it(os):
    cfg = config.load(DEFAULTS)
    facts = converged(os)
    # The summary model's stamp no longer matches: the file is fetched again in this run.
    summary = cfg.servers["summary"].model
    key = next(k for k in facts if k.startswith(f"cd {cfg.paths.models_dir} 2>/dev/null || exit 0; for rel in"))
    facts[key] = [
        line if not line.startswith(cfg.models[summary].dir + "/") else line.replace("|-", "").split("|")[0] + "|1 1||-"
        for line in facts[key]
    ]
    result = plan(facts, groups=INFERENCE)
    users = sorted(n for n, s in cfg.enabled_servers().items() if summary in (s.model, s.mmproj))
    assert actions(result) == dict.fromkeys(users, "restart")


@pytest.mark.parametrize("os", OSES)
def test_a_disabled_server_is_removed_and_nothing_else_moves(os):
    data = with_servers(vision={"enabled": False})
    assert actions(plan(converged(os), data=data, groups=INFERENCE)) == {"vision": "remove"}


@pytest.mark.parametrize("os", OSES)
def test_a_server_deleted_from_group_data_is_removed_too(os):
    data = with_servers(vision=None)
    assert actions(plan(converged(os), data=data, groups=INFERENCE)) == {"vision": "remove"}


@pytest.mark.parametrize("os", OSES)
def test_a_disabled_server_that_never_ran_is_left_alone(os):
    """The README's own advice on a fresh Mac: q4 disabled, never loaded; no kickstart of it (launchctl: 113)."""
    cfg = config.load(DEFAULTS)
    facts = converged(os)
    absent = supervise_facts.absent(
        layout.server_label(cfg, "q4"), layout.server_unit("q4"), os=os, records_dir=layout.records_dir(cfg)
    )
    data = with_servers(q4={"enabled": False})
    data["kitty_llamacpp"] = {**DEFAULTS["kitty_llamacpp"], "ref": "b11500"}
    family = servers.family(cfg)
    if os == "macos":
        others = [layout.server_label(cfg, n) for n in ENABLED if n != "q4"]
        absent.update(supervise_facts.installed(layout.LAUNCH_DAEMONS, family.label_prefix, others))
    else:
        others = [layout.server_unit(n) for n in ENABLED if n != "q4"]
        absent.update(supervise_facts.installed(layout.SYSTEMD_UNITS, family.unit_prefix, others))
    result = plan({**absent, **{k: v for k, v in facts.items() if k not in absent}}, data=data, groups=INFERENCE)
    found = actions(result)
    assert "q4" not in found
    assert not [c for c in supervisor_commands(result) if "llama-server.q4" in c or "kitty-llama-q4" in c]


@pytest.mark.parametrize("os", OSES)
def test_a_converge_stopped_after_current_moved_is_finished_by_the_next(os):
    """The record still names the old build: `current` already points at the new one."""
    cfg = config.load(DEFAULTS)
    plat = platform(os)
    facts = converged(os)
    old = f"{layout.llamacpp_dir(cfg)}/builds/b11000-old"
    for name, srv in cfg.enabled_servers().items():
        prog = servers.program(cfg, plat, name, srv, inference_facts.build_id(cfg, plat))
        values = inference_facts.input_values(cfg, plat, srv)
        render = supervise_facts.launchd.render if os == "macos" else supervise_facts.systemd.render
        record = {"definition": render(prog), "inputs": {**values, "llama.cpp": old}}
        facts.update(
            supervise_facts.program(prog, os=os, records_dir=layout.records_dir(cfg), values=values, record=record)
        )
    result = plan(facts, groups=INFERENCE)
    assert actions(result) == dict.fromkeys(ENABLED, "restart")
    assert "llama.cpp b11000-old →" in " ".join(op.name for op in result.ops)


@pytest.mark.parametrize("os", OSES)
def test_a_fresh_host_installs_each_server_once_without_a_restart_on_top(os):
    base = hosts.macos(installed=hosts.BREW_PACKAGES) if os == "macos" else hosts.linux(installed=hosts.APT_PACKAGES)
    result = plan(base, groups=INFERENCE)
    assert actions(result) == dict.fromkeys(ENABLED, "install")
    assert not [c for c in supervisor_commands(result) if "kickstart" in c or "systemctl restart" in c]


def test_the_health_wait_names_exactly_the_restarted_servers():
    data = with_servers(summary={"ctx_size": 4096})
    result = plan(converged("linux"), data=data, groups=INFERENCE)
    (wait,) = [op for op in result.ops if op.name.startswith("Wait for /health")]
    assert wait.name == "Wait for /health of the model servers: server summary"


# --- The restart table: printed before anything runs, decided at plan time ----------------------


@pytest.mark.parametrize("os", OSES)
def test_the_table_of_a_converged_host_says_nothing_will_restart(os, caplog):
    caplog.set_level(logging.INFO)
    result = plan(converged(os), groups=INFERENCE)
    table = restart_table(caplog)
    assert table[-1] == "nothing will restart"
    for name in ENABLED:
        assert row(table, f"server {name}").startswith(f"server {name} no restart up to date")
    # Only what is declared or on the host: this host has no RPC worker, and lists none.
    assert not any(line.startswith("rpc worker") for line in table)
    assert result.conditional == []


@pytest.mark.parametrize("os", OSES)
def test_the_table_names_the_changed_flag_and_its_values(os, caplog):
    caplog.set_level(logging.INFO)
    before = DEFAULTS["kitty_servers"]["summary"]["ctx_size"]
    result = plan(converged(os), data=with_servers(summary={"ctx_size": 4096}), groups=INFERENCE)
    table = restart_table(caplog)
    assert row(table, "server summary").startswith(f"server summary restart ctx_size {before} → 4096")
    assert row(table, "server q4").startswith("server q4 no restart up to date")
    assert table[-1].startswith("1 of ") and table[-1].endswith(": server summary")
    # Decided at plan time: no restart hides among the conditional operations.
    assert result.conditional == []


@pytest.mark.parametrize("os", OSES)
def test_the_table_shows_a_new_build_a_disabled_server_and_the_context_per_request(os, caplog):
    caplog.set_level(logging.INFO)
    data = {
        **with_servers(vision={"enabled": False}),
        "kitty_llamacpp": {**DEFAULTS["kitty_llamacpp"], "ref": "b11500"},
    }
    plan(converged(os), data=data, groups=INFERENCE)
    table = restart_table(caplog)
    assert row(table, "server q4").startswith("server q4 restart llama.cpp b11434-")
    assert " → b11500-" in row(table, "server q4")
    assert row(table, "server vision").startswith("server vision stop, remove disabled")
    cfg = config.load(DEFAULTS)
    q4 = cfg.servers["q4"]
    assert row(table, "server q4").endswith(
        f"{q4.ctx_per_request} tokens per request ({q4.ctx_size} / {q4.parallel} slots)"
    )


@pytest.mark.parametrize("os", OSES)
def test_the_table_says_which_model_file_was_replaced(os, caplog):
    caplog.set_level(logging.INFO)
    cfg = config.load(DEFAULTS)
    facts = converged(os)
    summary = cfg.servers["summary"].model
    key = next(k for k in facts if k.startswith(f"cd {cfg.paths.models_dir} 2>/dev/null || exit 0; for rel in"))
    facts[key] = [
        line if not line.startswith(cfg.models[summary].dir + "/") else line.replace("|-", "").split("|")[0] + "|1 1||-"
        for line in facts[key]
    ]
    plan(facts, groups=INFERENCE)
    table = restart_table(caplog)
    assert f"model {cfg.models[summary].dir}/" in row(table, "server summary")
    assert "replaced" in row(table, "server summary")


def test_a_kv_unified_server_gets_the_whole_context_per_request(caplog):
    caplog.set_level(logging.INFO)
    plan(converged("linux"), data=with_servers(q4={"kv_unified": True}), groups=INFERENCE)
    table = restart_table(caplog)
    q4 = config.load(DEFAULTS).servers["q4"]
    assert row(table, "server q4").startswith("server q4 restart kv_unified added (--kv-unified)")
    assert row(table, "server q4").endswith(f"{q4.ctx_size} tokens per request (shared KV cache)")


# --- Fail fast and roll back: what the wait is given ----------------------------------------------


def wait_attempts(result):
    (wait,) = [op for op in result.ops if op.name.startswith("Wait for /health")]
    (command,) = wait.commands
    return command


def test_the_wait_reads_systemd_and_rolls_a_reload_back_to_the_kept_unit():
    result = plan(converged("linux"), data=with_servers(summary={"ctx_size": 4096}), groups=INFERENCE)
    command = wait_attempts(result)
    assert (
        "systemctl show -p ActiveState -p SubState -p ExecMainStatus -p NRestarts kitty-llama-summary.service"
        in command
    )
    assert (
        "kitty-llama-summary.service.started.previous-definition /etc/systemd/system/kitty-llama-summary.service"
        in command
    )
    (unit,) = [op for op in result.ops if op.name.startswith("server summary:")]
    # The unit and record it ran with are kept before the new one is written.
    assert unit.commands[0].startswith(
        "if [ -f /opt/kitty/state/supervise/kitty-llama-summary.service.started ]; then cp -p"
    )


def test_the_wait_reads_launchd_and_a_new_build_rolls_current_back():
    data = {"kitty_llamacpp": {**DEFAULTS["kitty_llamacpp"], "ref": "b11500"}}
    command = wait_attempts(plan(converged("macos"), data=data, groups=INFERENCE))
    assert "launchctl print system/com.kitty.llama-server.q4" in command
    assert 'ln -sfn "$was" /opt/kitty/llama.cpp/current' in command
    # The rollback restarts as the converge does: bootout, bootstrap; no kickstart -k.
    assert "launchctl bootout system/com.kitty.llama-server.q4" in command and "kickstart" not in command


def test_a_first_install_says_it_has_nothing_to_roll_back_to():
    base = hosts.linux(installed=hosts.APT_PACKAGES)
    command = wait_attempts(plan(base, groups=INFERENCE))
    assert "a first install has nothing to roll back to" in command
