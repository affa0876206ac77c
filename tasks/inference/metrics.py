"""The model servers' metrics, for the stack's Prometheus: a file_sd target file.

Each enabled server with `metrics` on runs llama-server's own Prometheus
endpoint (`--metrics`, tasks/inference/server_args.py) and gets one target here, with
labels `server`, `model` and `host`. Prometheus watches file_sd files and
rereads them on change: a server appears or disappears at the next converge
without a restart of Prometheus or of any server. The file always exists (an
empty list when nothing is scraped), so Prometheus never reports it missing.

A Prometheus job reads it with:

    scrape_configs:
      - job_name: kitty-llama
        file_sd_configs: [{files: [<targets_file>]}]
"""

from __future__ import annotations

import functools

from pyinfra.api import deploy

from tasks.config import KittyConfig, ModelServer
from tasks.engine import host_file
from tasks.host import layout
from tasks.host.platform import Platform

TEMPLATE = "prometheus-targets.json.j2"


def scrape_address(cfg: KittyConfig, server: ModelServer) -> str:
    address = cfg.metrics.scrape_host or ("127.0.0.1" if server.host in ("0.0.0.0", "::") else server.host)
    return f"{address}:{server.port}"


def targets(cfg: KittyConfig, hostname: str) -> list[dict]:
    """file_sd entries, one per enabled server with metrics on, in name order.

    `hostname`: the host's node name, the `host` label unless kitty_metrics.host_label is set.
    """
    label = cfg.metrics.host_label or hostname
    return [
        {
            "targets": [scrape_address(cfg, server)],
            "labels": {"server": name, "model": server.model, "host": label},
        }
        for name, server in sorted(cfg.enabled_servers().items())
        if server.metrics
    ]


def render(cfg: KittyConfig, hostname: str) -> str:
    return host_file.render(TEMPLATE, targets=targets(cfg, hostname))


@deploy("Metrics")
def publish(cfg: KittyConfig, plat: Platform) -> None:
    host_file.content(
        name="Prometheus targets of the model servers",
        path=layout.metrics_targets(cfg),
        text=functools.partial(render, cfg),
        mode="644",
        # Owned by the account that owns the app checkout; folders made for it too.
        user=layout.service_user(cfg, plat),
        _sudo=plat.sudo,
    )
