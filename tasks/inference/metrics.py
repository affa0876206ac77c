"""The model servers' metrics, for the stack's Prometheus: a file_sd target file.

Each enabled server with `metrics` on runs llama-server's own Prometheus
endpoint (`--metrics`, tasks/inference/server_args.py) and gets one target here, with
labels `server`, `model` and `host`. Prometheus watches file_sd files and
rereads them on change: a server appears or disappears at the next converge
without a restart of Prometheus or of any server. The file always exists (an
empty list when nothing is scraped), so Prometheus never reports it missing.

On an application host of a placed inventory (several hosts, tasks/config/placement.py) the
file lists every server of every host, at the address the app host reaches it at
(tasks/config/scrape_targets.py): one Prometheus sees the whole inventory. A moved or removed
server leaves it at the next converge.

A keyed server answers /metrics only with its key, and Prometheus sets credentials per
job, not per target: each keyed target carries a hidden label `__kitty_job` (dropped
before storage) naming a job of its own, which sends a copy of the key that only
Prometheus's account can read (`authorization.credentials_file`, tasks/inference/scrape_keys.py).
The jobs are written beside the targets, `kitty-llama-scrape.yml`
(templates/prometheus-scrape.yml.j2): include it in Prometheus's config with
`scrape_config_files` (Prometheus >= 2.43) or copy its jobs. Prometheus reads a new job
only when it reloads its config: a new keyed server needs one reload; a moved or removed
one does not (its target leaves the file, the job stays empty). The key never appears
in either file.
"""

from __future__ import annotations

import functools

from pyinfra.api import deploy

from tasks.config import KittyConfig, ModelServer, ScrapeTarget
from tasks.engine import host_file
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.inference import scrape_keys

TEMPLATE = "prometheus-targets.json.j2"
JOBS_TEMPLATE = "prometheus-scrape.yml.j2"
# The job of every target without a key; a keyed server's is JOB-<server>.
JOB = "kitty-llama"
# The hidden label that sends a keyed target to its own job (Prometheus drops `__` labels).
JOB_LABEL = "__kitty_job"


def scrape_address(cfg: KittyConfig, server: ModelServer) -> str:
    address = cfg.metrics.scrape_host or ("127.0.0.1" if server.host in ("0.0.0.0", "::") else server.host)
    return f"{address}:{server.port}"


def scraped(cfg: KittyConfig) -> list[ScrapeTarget]:
    """What this host's Prometheus scrapes: the placement's list on an application host of a
    placed inventory, else this host's own enabled servers with metrics on, in name order."""
    if cfg.scrape is not None:
        return list(cfg.scrape)
    return [
        ScrapeTarget(
            server=name,
            host="",
            model=server.model,
            address=scrape_address(cfg, server),
            keyed=server.api_key_file is not None,
            local=True,
        )
        for name, server in sorted(cfg.enabled_servers().items())
        if server.metrics
    ]


def job_of(target: ScrapeTarget) -> str:
    return f"{JOB}-{target.server}" if target.keyed else JOB


def targets(cfg: KittyConfig, hostname: str) -> list[dict]:
    """file_sd entries, one per scraped server, labelled server, model and host.

    `hostname`: the host's node name, the `host` label of its own servers unless
    kitty_metrics.host_label is set (another host's servers carry that host's label).
    """
    label = cfg.metrics.host_label or hostname
    entries = []
    for target in scraped(cfg):
        labels = {"server": target.server, "model": target.model, "host": label if target.local else target.host}
        if target.keyed:
            labels[JOB_LABEL] = job_of(target)
        entries.append({"targets": [target.address], "labels": labels})
    return entries


def jobs(cfg: KittyConfig) -> list[dict]:
    """The scrape jobs: kitty-llama for the targets without a key, one per keyed server with the
    path of its key's copy (never the key)."""
    keyed = sorted({t.server for t in scraped(cfg) if t.keyed})
    return [{"name": JOB, "credentials_file": None}] + [
        {"name": f"{JOB}-{server}", "credentials_file": scrape_keys.key_path(cfg, server)} for server in keyed
    ]


def render(cfg: KittyConfig, hostname: str) -> str:
    return host_file.render(TEMPLATE, targets=targets(cfg, hostname))


def render_jobs(cfg: KittyConfig) -> str:
    return host_file.render(
        JOBS_TEMPLATE, jobs=jobs(cfg), job=JOB, job_label=JOB_LABEL, targets_file=layout.metrics_targets(cfg)
    )


@deploy("Metrics")
def publish(cfg: KittyConfig, plat: Platform) -> None:
    # Owned by the account that owns the app checkout; folders made for it too.
    owner = layout.service_user(cfg, plat)
    # The keys first: a job never names a key file that is not there yet.
    scrape_keys.install(cfg, plat, {t.server for t in scraped(cfg) if t.keyed})
    host_file.content(
        name="Prometheus targets of the model servers",
        path=layout.metrics_targets(cfg),
        text=functools.partial(render, cfg),
        mode="644",
        user=owner,
        _sudo=plat.sudo,
    )
    host_file.content(
        name="Prometheus scrape jobs of the model servers",
        path=layout.metrics_jobs(cfg),
        text=render_jobs(cfg),
        mode="644",
        user=owner,
        _sudo=plat.sudo,
    )
