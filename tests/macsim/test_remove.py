"""remove.py on a simulated Mac: launchd's side of taking a host out.

Every LaunchDaemon of kitty-ops booted out and its plist and record gone, the wired-limit
boot job too and the limit back to macOS's default, newsyslog's entries gone; a llama-server
that launchd does not run for kitty-ops lives on; a second run changes nothing and calls no
launchctl verb; a converge afterwards starts each server once again.
"""

from __future__ import annotations

import pytest

from tasks import config
from tasks.host import layout
from tasks.system import logs, memory_budget
from tests.macsim.harness import group_data

pytestmark = pytest.mark.e2e

CFG = config.load(group_data())
SERVERS = {layout.server_label(CFG, name) for name in CFG.enabled_servers()}
LABELS = SERVERS | {layout.WIRED_LIMIT_LABEL}
FOREIGN_PORT = 8183


@pytest.fixture(scope="module")
def converged(simulated_mac):
    simulated_mac.seed_build(group_data()["kitty_llamacpp"]["ref"])
    first = simulated_mac.converge()
    assert first.code == 0, first.output[-4000:]
    assert first.starts() == dict.fromkeys(LABELS, 1)
    return first


def plists(mac) -> list[str]:
    return mac.check(f"ls {layout.LAUNCH_DAEMONS} | grep '^com.kitty' || true").split()


def test_remove_boots_out_every_job_deletes_plists_records_rotation_and_the_wired_limit(simulated_mac, converged):
    mac = simulated_mac
    assert set(plists(mac)) >= {f"{label}.plist" for label in LABELS}
    model = f"{CFG.paths.models_dir}/{next(iter(CFG.models.values())).dir}"
    # A llama-server run by hand, not by launchd for kitty-ops: a copy of the build's binary.
    mac.check(
        f"cp {CFG.paths.opt_dir}/llama.cpp/current/bin/llama-server /tmp/foreign-llama-server && "
        f"(nohup /tmp/foreign-llama-server --port {FOREIGN_PORT} --host 127.0.0.1 -m $(ls -d {model}/*.gguf | head -1) "
        "</dev/null >/tmp/foreign.log 2>&1 & echo $! > /tmp/foreign.pid)",
        user="admin",
    )
    pid = mac.check("cat /tmp/foreign.pid").strip()
    health = f"curl -fsS http://127.0.0.1:{FOREIGN_PORT}/health"
    mac.check(f"i=0; until {health}; do i=$((i + 1)); [ $i -lt 50 ] || exit 1; sleep 0.2; done")

    removed = mac.run("remove.py")
    assert removed.code == 0, removed.output[-4000:]
    assert removed.rejected() == []
    booted_out = {c["argv"][2].rpartition("/")[2] for c in removed.calls if c["argv"][1] == "bootout"}
    assert booted_out == LABELS
    assert plists(mac) == []
    assert mac.check(f"ls -A {layout.records_dir(CFG)} 2>/dev/null || true").strip() == ""
    assert mac.exec(f"test -e {logs.NEWSYSLOG_CONF}").returncode != 0
    assert mac.check(f"sysctl -n {memory_budget.WIRED_LIMIT}").strip() == "0"
    for label in LABELS:
        assert mac.exec(f"launchctl print system/{label}").returncode == 113
    # Builds gone, models kept and said so.
    assert mac.exec(f"test -e {CFG.paths.opt_dir}/llama.cpp").returncode != 0
    assert mac.exec(f"ls {model}/*.gguf").returncode == 0
    assert f"kept: model files: {CFG.paths.models_dir}" in removed.output
    # The foreign one lives on, and still serves.
    assert mac.exec(f"kill -0 {pid}").returncode == 0
    assert '"ok"' in mac.check(health)

    again = mac.run("remove.py")
    assert again.code == 0, again.output[-4000:]
    assert again.changed() == [], again.changed()
    assert not [c for c in again.calls if c["argv"][1] in ("bootstrap", "bootout", "kickstart", "enable")]

    mac.exec(f"kill {pid}")
    mac.seed_build(group_data()["kitty_llamacpp"]["ref"])
    back = mac.converge()
    assert back.code == 0, back.output[-4000:]
    assert back.starts() == dict.fromkeys(LABELS, 1)
    assert back.rejected() == []
