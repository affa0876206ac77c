"""The current host's configuration, as every deploy file (deploy, stop, backup, bench...) works with it.

Host data validated by the schema (tasks/config.py), then placed over the inventory:
which servers run here and where the app finds the others (tasks/placement.py), and
which llama.cpp RPC workers a split server uses (tasks/rpc_workers.py). Bad host data
or a bad placement fails here, before a single operation is planned.
"""

from __future__ import annotations

from tasks import placement, rpc_workers
from tasks.config import KittyConfig


def load(current_host=None) -> KittyConfig:
    return rpc_workers.placed(placement.host_config(current_host), current_host)
