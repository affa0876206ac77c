"""The model servers' units and plists rendered from the default data, pinned by their sha1.

The plan tests' "converged host" (tests/plan/supervise_facts.py) holds each
unit or plist as the code under test renders it, so a change in the render
(a template, an argument, a default) looks converged to them. On a real host
it is a reload: every model server restarts on its next converge. A change
that means it updates the literals here, and says in the change that every
host restarts its servers. The build id is pinned the same way
(tests/unit/test_build_id_pinned.py), the record's text by
tests/unit/test_record_round_trip.py.

Computed from the code at a97ba8a.
"""

from __future__ import annotations

import pytest

from tasks import config, servers
from tasks.supervise import launchd, systemd
from tasks.supervise.decide import sha1_of
from tests.plan import hosts
from tests.plan.harness import simulated_platform

PINNED = {
    ("linux", "server q4"): "0ac07e6c35b0f89098d8a894e15eb08516ab939a",
    ("linux", "server f16"): "6a019cfd89a2e4628684425aaf76fd6e162d7d35",
    ("linux", "server summary"): "649829e5bba634599a9099f7be7913d653efc2e6",
    ("linux", "server vision"): "594ec57ccf98db49db424294c911a14a84f40f1a",
    ("macos", "server q4"): "6d4468e288862bbd493c361dca7109df56a78b33",
    ("macos", "server f16"): "05dd1be59229a5406d76b56f6dde8c1071f91b6a",
    ("macos", "server summary"): "3cb498333cb4d273b6c862050c14001faa96c6be",
    ("macos", "server vision"): "d371889febc79de02e76cb3ddfd05b4be0c06759",
}


@pytest.mark.parametrize("os", ["linux", "macos"])
def test_the_default_servers_definitions_are_the_ones_every_host_has(os):
    plat = simulated_platform(os, "admin", "x86_64" if os == "linux" else "arm64")
    render = systemd.render if os == "linux" else launchd.render
    # The build id is not in the definition (servers run `current`): any id renders the same.
    rendered = {(os, p.name): sha1_of(render(p)) for p in servers.programs(config.load(hosts.DEFAULTS), plat, "any")}
    pinned = {key: value for key, value in PINNED.items() if key[0] == os}
    assert rendered == pinned, "a changed definition restarts every model server on every host: if meant, pin it"
