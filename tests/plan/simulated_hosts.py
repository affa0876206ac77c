"""An inventory of simulated hosts, to see a plan for machines that are not here.

    pyinfra tests/plan/simulated_hosts.py deploy.py --dry

Nothing is executed: the @fake connector answers every fact from tests/plan/hosts.py.
"""

from tests.plan import hosts as _hosts

_SIMULATED = [
    ("@fake/mac-fresh", _hosts.macos()),
    ("@fake/mac-converged", _hosts.macos_converged()),
    ("@fake/linux-fresh", _hosts.linux()),
    ("@fake/linux-converged", _hosts.linux_converged()),
]
# The manual pins no model revision; show the whole plan anyway.
_DATA = {"fake_delay": 0, "fake_delay_jitter": 0, "allow_unpinned_models": True}
_HOSTS = [(name, {"fake_responses": facts, **_DATA}) for name, facts in _SIMULATED]

inference = _HOSTS
application = _HOSTS
