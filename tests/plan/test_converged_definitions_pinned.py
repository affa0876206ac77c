"""The model servers' units and plists rendered from the default data, pinned by their sha1.

The plan tests' "converged host" (tests/plan/supervise_facts.py) holds each
unit or plist as the code under test renders it, so a change in the render
(a template, an argument, a default) looks converged to them. On a real host
it is a reload: every model server restarts on its next converge. A change
that means it updates the literals here, and says in the change that every
host restarts its servers. The build id is pinned the same way
(tests/unit/test_build_id_pinned.py), the record's text by
tests/unit/test_record_round_trip.py.

Computed from the code at a97ba8a; again when the servers that ask for GPU layers started
logging at --log-verbosity 4 (issue 25: where their layers are is read from their load log), a
change that restarts every such server once.
"""

from __future__ import annotations

import pytest

from tasks import config
from tasks.inference import servers
from tasks.supervise import launchd, systemd
from tasks.supervise.decide import sha1_of
from tests.plan import hosts
from tests.plan.harness import simulated_platform

PINNED = {
    ("linux", "server q4"): "6d114a22e42c884668b4eda41e782cef37d34320",
    ("linux", "server f16"): "ef515ca000341ffcff3e28c8d5a35111323647bf",
    ("linux", "server summary"): "ffaed87bb97a9ddc1869279a2ca3341ea1fbd0f2",
    ("linux", "server vision"): "b50f1ce95c0e4835fb8a615d5d65b5989e3e2bde",
    ("macos", "server q4"): "5d96a294bf9f1304a07d32634682a5fe75dd302d",
    ("macos", "server f16"): "236bc61755a56f6ec9206a61d9ef941d60b4db64",
    ("macos", "server summary"): "cfdd8ef003c1057d23607953ee34b8b842fd2afb",
    ("macos", "server vision"): "5ed96d0a6d007bd00069f3a484431688ad802579",
}


@pytest.mark.parametrize("os", ["linux", "macos"])
def test_the_default_servers_definitions_are_the_ones_every_host_has(os):
    plat = simulated_platform(os, "admin", "x86_64" if os == "linux" else "arm64")
    render = systemd.render if os == "linux" else launchd.render
    # The build id is not in the definition (servers run `current`): any id renders the same.
    rendered = {(os, p.name): sha1_of(render(p)) for p in servers.programs(config.load(hosts.DEFAULTS), plat, "any")}
    pinned = {key: value for key, value in PINNED.items() if key[0] == os}
    assert rendered == pinned, "a changed definition restarts every model server on every host: if meant, pin it"
