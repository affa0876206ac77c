"""Safe changes on the sandbox host for real (systemd): checked before anything moves, fail fast, roll back.

- an unknown flag is refused before anything on the host changes;
- a server that dies at start is reported within its restart delay, and
  the previous configuration serves again; the next good converge is a no-op;
- a llama.cpp build whose server cannot start: `current` goes back, all healthy;
- the restart table says what will restart and why;
- the health table compares each server's /props with its declaration.

tests/macsim/test_restart_scenarios.py runs the launchd side.
"""

from __future__ import annotations

import time

import pytest

from tasks.host import layout
from tasks.host.platform import Platform
from tasks.inference import llamacpp
from tasks.runbook import verify
from tests.e2e.conftest import converge, sandbox_config, sandbox_data, ssh, wait_healthy

pytestmark = pytest.mark.e2e
LINUX = Platform(os="linux", arch="x86_64", user="admin", sudo=True)


def unit(server: str) -> str:
    return layout.server_unit(server)


def main_pid(name: str, server: str) -> str:
    return ssh(name, f"systemctl show -p MainPID --value {unit(server)}").stdout.strip()


def invocation(name: str, server: str) -> str:
    return ssh(name, f"systemctl show -p InvocationID --value {unit(server)}").stdout.strip()


def host_files(name: str, kept: bool = True) -> str:
    """sha1 of every unit, record (and kept copy), and where `current` points: what a refused change must not touch.

    `kept=False` leaves out the copies kept for a rollback (`*.previous*`): a (re)start rotates them.
    """
    cfg = sandbox_config()
    records = f"{layout.records_dir(cfg)}/*" if kept else f"{layout.records_dir(cfg)}/*.started"
    return ssh(
        name,
        f"sha1sum /etc/systemd/system/kitty-llama-* {records}; readlink {layout.llamacpp_dir(cfg)}/current",
    ).stdout


def with_summary(**changes) -> dict:
    servers = sandbox_data()["kitty_servers"]
    servers["summary"].update(changes)
    return {"kitty_servers": servers}


def timed(name, tmp_path, overrides=None, args=()):
    started = time.monotonic()
    result = converge(name, tmp_path, overrides=overrides, args=args)
    return result, time.monotonic() - started


def test_an_unknown_flag_is_refused_before_anything_changes(sandbox, first_converge, tmp_path):
    pid, files = main_pid(sandbox, "summary"), host_files(sandbox)
    result, seconds = timed(sandbox, tmp_path, with_summary(extra_args=["--no-such-flag"]))
    assert result.code != 0
    assert "kitty_servers.summary.extra_args: --no-such-flag is not a flag of llama-server b11434" in result.output
    print(f"unknown flag refused in {seconds:.1f} s")
    assert seconds < 10, result.output[-2000:]
    assert main_pid(sandbox, "summary") == pid
    assert host_files(sandbox) == files


def test_a_server_that_dies_at_start_is_rolled_back_fast_and_the_next_good_converge_is_a_noop(
    sandbox, first_converge, tmp_path
):
    cfg = sandbox_config()
    _, noop_seconds = timed(sandbox, tmp_path)
    files = host_files(sandbox, kept=False)
    # A flag the build knows, with a value the server refuses when it starts.
    result, seconds = timed(sandbox, tmp_path, with_summary(extra_args=["--cache-type-k", "bogus"]))
    print(f"no-op converge {noop_seconds:.1f} s; failed start reported and rolled back in {seconds:.1f} s")
    assert result.code != 0
    out = result.output
    assert "server summary: tried reload (--cache-type-k added (bogus))" in out, out[-4000:]
    assert "exited while starting (systemd:" in out and "ExecMainStatus=1" in out
    assert "Unsupported cache type: bogus" in out  # the tail of its log
    assert "Rolled back server summary: the previous configuration serves again." in out
    # Within the restart delay + load + 10 s, on top of what a converge costs anyway (not the 120 s health_timeout).
    assert seconds - noop_seconds < cfg.launchd.throttle_interval + 10, out[-3000:]
    wait_healthy(cfg.servers["summary"].port, timeout=10)
    assert "bogus" not in ssh(sandbox, f"cat /etc/systemd/system/{unit('summary')}").stdout
    assert host_files(sandbox, kept=False) == files
    # The good configuration again: nothing to do for that server.
    before = invocation(sandbox, "summary")
    again = converge(sandbox, tmp_path)
    assert again.code == 0, again.output[-3000:]
    assert invocation(sandbox, "summary") == before
    assert "nothing will restart" in again.output


def test_a_build_whose_server_cannot_start_puts_current_back(sandbox, first_converge, tmp_path):
    cfg = sandbox_config()
    root = layout.llamacpp_dir(cfg)
    good = ssh(sandbox, f"readlink {root}/current").stdout.strip()
    kitty1 = {"kitty_llamacpp": {**sandbox_data()["kitty_llamacpp"], "ref": "b11434-kitty1"}}
    # The new build, made and switched to, then back: it stays on the host beside the good one.
    assert converge(sandbox, tmp_path, overrides=kitty1).code == 0
    new = ssh(sandbox, f"readlink {root}/current").stdout.strip()
    assert converge(sandbox, tmp_path).code == 0
    assert ssh(sandbox, f"readlink {root}/current").stdout.strip() == good
    # Its llama-server now answers --version and --help, and cannot start a model.
    binary = f"{new}/bin/llama-server"
    ssh(
        sandbox,
        f"sudo mv {binary} {binary}.real && printf '%s\\n' '#!/bin/sh' "
        f"'case $1 in --version | --help) exec {binary}.real \"$@\" ;; esac' "
        f"'echo \"cannot load any model with this build\" >&2' 'exit 3' | sudo tee {binary} >/dev/null "
        f"&& sudo chmod 755 {binary}",
    )
    try:
        pids = {n: main_pid(sandbox, n) for n in cfg.enabled_servers()}
        result = converge(sandbox, tmp_path, overrides=kitty1)
        assert result.code != 0
        assert "tried restart (llama.cpp " in result.output, result.output[-4000:]
        assert "the previous configuration serves again" in result.output
        assert ssh(sandbox, f"readlink {root}/current").stdout.strip() == good
        for name, server in cfg.enabled_servers().items():
            wait_healthy(server.port, timeout=10)
            assert main_pid(sandbox, name) != pids[name]
        # Back on the good ref: nothing restarts.
        again = converge(sandbox, tmp_path)
        assert again.code == 0 and "nothing will restart" in again.output, again.output[-3000:]
    finally:
        ssh(sandbox, f"sudo mv -f {binary}.real {binary}", check=False)


def test_the_restart_table_before_anything_runs(sandbox, first_converge, tmp_path):
    result = converge(sandbox, tmp_path, args=["--dry"])
    assert "nothing will restart" in result.output
    assert "1024 tokens per request (2048 / 2 slots)" in result.output  # q4: --parallel 2 splits its context
    changed = converge(sandbox, tmp_path, overrides=with_summary(ctx_size=512), args=["--dry"])
    line = next(line for line in changed.output.splitlines() if "server summary " in line and "restart" in line)
    assert "ctx_size 1024 → 512" in line
    assert "1 of " in changed.output and "will (re)start or stop: server summary" in changed.output
    disabled = converge(sandbox, tmp_path, overrides=with_summary(enabled=False), args=["--dry"])
    assert any("server summary" in line and "stop, remove" in line for line in disabled.output.splitlines())


def props_rows(name: str) -> dict[str, verify.Row]:
    """The health table's probe, run on the host as the converge runs it, and assessed."""
    checks = verify.checks(sandbox_config(), LINUX, ("inference",))
    out = ssh(name, verify.probe_command(checks)).stdout.splitlines()
    found, props = verify.parse(out), verify.parse_props(out)
    return {c.name: verify.assess(c, found.get(c.label), props.get(c.label)) for c in checks}


def test_props_match_the_declaration_and_a_server_started_by_hand_is_named(sandbox, first_converge, tmp_path):
    rows = props_rows(sandbox)
    assert {n: r.state for n, r in rows.items()} == dict.fromkeys(rows, "healthy")
    assert rows["q4"].context == "1024 tokens" and rows["summary"].context == "1024 tokens"
    cfg = sandbox_config()
    summary = cfg.servers["summary"]
    model = verify.checks(cfg, LINUX, ("inference",))[1].declared.model_path
    ssh(sandbox, f"sudo systemctl stop {unit('summary')}")
    by_hand = ssh(
        sandbox,
        f"nohup {llamacpp.binary(cfg)} --host 127.0.0.1 --port {summary.port} --model {model} "
        f"--alias by-hand --ctx-size 512 --threads 1 </dev/null >/tmp/by-hand.log 2>&1 & echo $!",
    ).stdout.strip()
    try:
        wait_healthy(summary.port, timeout=30)
        row = props_rows(sandbox)["summary"]
        assert not row.healthy
        assert "alias: serves 'by-hand', declared 'kitty-summary'" in row.state
        assert "ctx_size: serves 512 tokens per request, declared 1024" in row.state
    finally:
        ssh(sandbox, f"kill {int(by_hand)}; sleep 1; sudo systemctl start {unit('summary')}", check=False)
    wait_healthy(summary.port, timeout=30)
