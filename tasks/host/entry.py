"""The one way into a host for every entry script (deploy, stop, diagnose, bench, backup, restore).

    cfg, plat = entry.begin()

In this order, because each needs the one before: the fact cache and the fact shell
(tasks/engine/fact_cache.py: each fact read once, all of them over one SSH session; without it
every fact is a session of its own, ~48 ms each on the sandbox), then the host's configuration
placed over the inventory (bad host data or a bad placement fails here, before anything is
planned), then the platform (macOS or Linux, launchd or systemd, read from facts).
"""

from __future__ import annotations

from pyinfra import host

from tasks.config import KittyConfig, host_config
from tasks.engine.fact_cache import install_fact_cache
from tasks.host import platform
from tasks.host.platform import Platform


def begin(current_host=None) -> tuple[KittyConfig, Platform]:
    install_fact_cache()
    # `is None`, not `or`: pyinfra's context proxy has no truth value.
    cfg = host_config.load(host if current_host is None else current_host)
    return cfg, platform.detect()
