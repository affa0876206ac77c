"""inventories/two-macs.py on simulated Macs, to see its plan here:

    pyinfra tests/plan/simulated_two_macs.py deploy.py --dry

The same hosts, groups and kitty_serves / kitty_address as the example inventory, under
@fake names (no SSH): the @fake connector answers every fact as a bootstrapped 192 GB Mac
would (tests/plan/hosts.py). Nothing is executed.
"""

import runpy
from pathlib import Path

from tests.plan import hosts as _hosts

_EXAMPLE = runpy.run_path(str(Path(__file__).resolve().parents[2] / "inventories" / "two-macs.py"))
_FAKE = {
    "fake_delay": 0,
    "fake_delay_jitter": 0,
    "allow_unpinned_models": True,
    "fake_responses": _hosts.macos(installed=_hosts.BREW_PACKAGES, memory_gib=192),
}


def _simulated(group):
    found = []
    for name, data in _EXAMPLE[group]:
        kept = {key: value for key, value in data.items() if not key.startswith("ssh_")}
        # An @fake name is no address: the example's host name is (tasks/config/placement.py).
        kept.setdefault("kitty_address", name)
        found.append((f"@fake/{name}", {**kept, **_FAKE}))
    return found


inference = _simulated("inference")
application = _simulated("application")
