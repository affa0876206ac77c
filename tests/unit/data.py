"""The deploy's default host data for unit tests, and a way to change one value of it."""

import copy

from tests.plan.harness import group_data

DEFAULTS = {key: value for key, value in group_data().items() if key.startswith("kitty_")}


def host_data(**changes) -> dict:
    """A deep copy of DEFAULTS with `section__key__field=value` changes applied."""
    data = copy.deepcopy(DEFAULTS)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = data
        for part in parents:
            target = target[part]
        target[leaf] = value
    return data
