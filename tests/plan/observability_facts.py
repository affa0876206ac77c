"""Scripted facts of the observability files on a converged host: the Prometheus targets and the log rotation config.

Each answer is what tasks/host_file.FileState prints for the file the deploy
would write from the same group data: its sha256, mode and owner.
"""

from __future__ import annotations

import hashlib

from tasks import config
from tasks.engine import host_file
from tasks.host import layout
from tasks.inference import metrics
from tasks.system import logs
from tests.plan.harness import simulated_platform

# `uname -n` of the simulated hosts.
HOSTNAME = "studio"


def file_state(path: str, text: str, mode: str = "644", user: str = "root") -> dict:
    digest = hashlib.sha256(text.encode()).hexdigest()
    return {f"{host_file.MARK} {path}": [HOSTNAME, f"{digest} {mode} {user}"]}


def converged(data: dict, *, os: str, user: str = "admin", inference: bool = True) -> dict:
    cfg = config.load(data)
    plat = simulated_platform(os, user, "arm64" if os == "macos" else "x86_64")
    facts = file_state(logs.config_path(plat), logs.render(cfg, plat))
    if inference:
        owner = layout.service_user(cfg, plat)
        facts.update(metrics_files(cfg, owner))
    return facts


def metrics_files(cfg: config.KittyConfig, owner: str) -> dict:
    """The Prometheus targets and scrape jobs (tasks/inference/metrics.py) as the deploy writes them for `cfg`."""
    return {
        **file_state(layout.metrics_targets(cfg), metrics.render(cfg, HOSTNAME), user=owner),
        **file_state(layout.metrics_jobs(cfg), metrics.render_jobs(cfg), user=owner),
    }
