"""`replicas: true` has to be said by every host that runs the server, not by one of them.

Each host's data is its own: a server that one host's data marks as a
replica and another's does not would run on both, twice, without the second
host having asked for it. tasks/config/placement.py refuses that, naming both hosts.
"""

from __future__ import annotations

from tasks import config
from tests.unit.data import host_data
from tests.unit.test_placement import BOTH, INF, refused, view


def with_summary_replicas(replicas: bool) -> config.KittyConfig:
    data = host_data()
    data["kitty_servers"]["summary"]["replicas"] = replicas
    return config.load(data)


def test_a_server_marked_as_a_replica_on_one_host_only_is_refused_naming_both():
    views = [
        view("studio.local", BOTH, ["q4", "summary", "vision"], cfg=with_summary_replicas(True)),
        view("studio2.local", INF, ["f16", "summary"], cfg=with_summary_replicas(False)),
    ]
    message = refused(views)
    assert "kitty_servers.summary: runs on studio.local, studio2.local" in message
    assert "set replicas: true on it" in message


def test_the_same_the_other_way_round():
    views = [
        view("studio.local", BOTH, ["q4", "summary", "vision"], cfg=with_summary_replicas(False)),
        view("studio2.local", INF, ["f16", "summary"], cfg=with_summary_replicas(True)),
    ]
    assert "kitty_servers.summary: runs on studio.local, studio2.local" in refused(views)
