"""One simulated Mac per test module (sandbox/macsim), removed at the end.

Without a Docker engine the tests are skipped, unless CI is set: there a missing
engine is a failure, not a skip.
"""

from __future__ import annotations

import os
import zlib

import pytest

from sandbox.macsim import macsim
from tests.macsim.harness import SimMac

# 2230 is macsim.py's default for a hand-started one; tests take 2231-2249, one per module.
PORTS = range(2231, 2250)


@pytest.fixture(scope="module")
def simulated_mac(request):
    if not macsim.docker_answers():
        if os.environ.get("CI"):
            pytest.fail("no Docker engine answers, and CI is set: the sim Mac tests must run")
        pytest.skip("no Docker engine: run `bash .ci/setup` first")
    module = request.module.__name__.rpartition(".")[2]
    port = PORTS[zlib.crc32(module.encode()) % len(PORTS)]
    mac = SimMac.start(f"kitty-macsim-{module.removeprefix('test_').replace('_', '-')}", ssh_port=port)
    yield mac
    mac.stop()
