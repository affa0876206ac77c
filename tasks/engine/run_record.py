"""What one pyinfra run found, kept for the table it prints at its end.

The stop, backup and restore chapters note outcomes while their operations execute and print
them last. The notes hang on the run's pyinfra `State` (weakly: they go when the state goes),
then on the host's name, so a second run in the same process (the tests make many) starts from
nothing and never reports what an earlier run found.
"""

from weakref import WeakKeyDictionary

from pyinfra.api import Host, State

_RUNS: WeakKeyDictionary[State, dict[tuple[str, str], dict]] = WeakKeyDictionary()


def kept(host: Host, chapter: str) -> dict:
    """This run's notes of `chapter` on `host`: one mutable dict, the same each time it is asked for."""
    notes = _RUNS.setdefault(host.state, {})
    return notes.setdefault((host.name, chapter), {})
