"""The current host's configuration, as every deploy file (deploy, stop, backup, bench...) works with it.

Host data validated by the schema (tasks/config/schema.py), then placed over the inventory:
which servers run here and where the app finds the others (tasks/config/placement.py), and
which llama.cpp RPC workers a split server uses (tasks/config/rpc_placement.py). Bad host data
or a bad placement fails here, before a single operation is planned.
"""

from __future__ import annotations

from tasks.config import KittyConfig, placement, rpc_placement


def load(current_host=None) -> KittyConfig:
    return rpc_placement.placed(placement.host_config(current_host), current_host)
