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
change that restarts every such server once; again when the manual's servers got `--load-mode none`
(issue 27: loads without mmap, README "Model load speed"), which restarts every model server once.
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
    ("linux", "server q4"): "7ab41724027e3a81d67cc92b65aca2dc6e237143",
    ("linux", "server f16"): "8eff665b27bd0dc50fa15ed70cc9d616d87a9978",
    ("linux", "server summary"): "e11e1dad0f28a11958baf8d88afef1be0e5c0cb1",
    ("linux", "server vision"): "f5a1f073b2f4ab3a2f0995df784731162b0d4ac9",
    ("macos", "server q4"): "b0b9a2e39b5a4217d78421809512f78d62d22d03",
    ("macos", "server f16"): "c8c6069da6d177dfa4bf3d0e3a44515fd3ba90a7",
    ("macos", "server summary"): "d7a5d094cb91d3c70ba0b291dcc185d6389a7edd",
    ("macos", "server vision"): "a6668dd942a45c3c9ab83454c30f6cb485255ed0",
}


@pytest.mark.parametrize("os", ["linux", "macos"])
def test_the_default_servers_definitions_are_the_ones_every_host_has(os):
    plat = simulated_platform(os, "admin", "x86_64" if os == "linux" else "arm64")
    render = systemd.render if os == "linux" else launchd.render
    # The build id is not in the definition (servers run `current`): any id renders the same.
    rendered = {(os, p.name): sha1_of(render(p)) for p in servers.programs(config.load(hosts.DEFAULTS), plat, "any")}
    pinned = {key: value for key, value in PINNED.items() if key[0] == os}
    assert rendered == pinned, "a changed definition restarts every model server on every host: if meant, pin it"
