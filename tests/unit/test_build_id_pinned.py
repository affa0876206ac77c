"""The llama.cpp build id of the default settings, pinned as literals.

A build id names the folder a build lives in and the value of `current`: when
what goes into it changes (its hash input, its format), every host builds
llama.cpp again on its next converge and restarts every model server. The
plan tests take the id of their "converged host" from `llamacpp.wanted_build`
itself, so they cannot see such a change; this test does. When a change to
the id is wanted, update the literals here and say so in the change: it
costs every host a rebuild and a restart.

Computed from the code at a97ba8a (ref b11434, build number 11434).
"""

from __future__ import annotations

import pytest

from tasks import config
from tasks.inference import llamacpp
from tests.plan.harness import simulated_platform
from tests.unit.data import host_data

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LINUX = simulated_platform("linux", "admin", "x86_64")
MAC = simulated_platform("macos", "admin", "arm64")


@pytest.mark.parametrize(
    ("plat", "commit", "pinned"),
    [
        (LINUX, None, "b11434-cpu-4be4a2a5f7"),
        (LINUX, COMMIT, "b11434-cpu-4be4a2a5f7-0123456789ab"),
        (MAC, None, "b11434-metal-3b695a5a23"),
        (MAC, COMMIT, "b11434-metal-3b695a5a23-0123456789ab"),
    ],
    ids=["linux", "linux-at-commit", "macos", "macos-at-commit"],
)
def test_the_default_build_id_is_the_one_every_host_has(plat, commit, pinned):
    assert llamacpp.wanted_build(config.load(host_data()), plat, commit).id == pinned


def test_a_host_with_an_rpc_worker_has_its_own_pinned_build_id():
    data = host_data()
    data["kitty_rpc_worker"] = {"port": 50052}
    assert llamacpp.wanted_build(config.load(data), LINUX).id == "b11434-cpu-6755c59941"
