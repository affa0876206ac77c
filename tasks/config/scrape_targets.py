"""What an application host's Prometheus scrapes: every model server of every host of the placement.

One Prometheus, the application stack's, sees the whole inventory: each site of each
enabled server with metrics on (a replica on each of its hosts), at the address the
application host reaches it at, the same one its .env gives the app (tasks/config/placement.py):
a site on the app host itself at its `host` (or kitty_metrics.scrape_host, as before),
a site on another host at the address it binds there (its host's kitty_address when it
binds to every interface). A site bound to loopback on another host is reached by
nothing here, so it is not a target: no app host uses it (placement binds a server
beyond loopback as soon as one does). A site with a key is `keyed`: tasks/inference/metrics.py
gives it a scrape job of its own that sends a copy of the key (tasks/inference/scrape_keys.py).

Pure: computed from the placement's sites and each host's config, before any operation.
"""

from __future__ import annotations

from collections.abc import Mapping

from tasks import config
from tasks.config import KittyConfig, ScrapeTarget

WILDCARD = ("0.0.0.0", "::")


def host_label(host_name: str, cfg: KittyConfig) -> str:
    """Another host's `host` label: its kitty_metrics.host_label, else its inventory name without `user@`.
    (Its node name, the label of the app host's own servers, is a fact of that host, unknown here.)"""
    return cfg.metrics.host_label or host_name.rpartition("@")[2]


def with_port(address: str, port: int) -> str:
    bracketed = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"{bracketed}:{port}"


def for_app_host(
    app: str, sites: Mapping[str, tuple], addresses: Mapping[str, str | None], configs: Mapping[str, KittyConfig]
) -> list[ScrapeTarget]:
    """The targets of app host `app`, in server then inventory order.

    `sites`: server -> its placement.Site on each host; `configs`: each host's own (unplaced) config.
    """
    found = []
    for server, server_sites in sorted(sites.items()):
        for site in server_sites:
            srv = configs[site.host].servers[server]
            if not srv.metrics:
                continue
            local = site.host == app
            if local:
                address = configs[app].metrics.scrape_host or ("127.0.0.1" if site.bind in WILDCARD else site.bind)
            elif site.bind in WILDCARD:
                address = addresses[site.host]
            elif config.LOOPBACK.match(site.bind):
                address = None
            else:
                address = site.bind
            if address is None:
                continue
            found.append(
                ScrapeTarget(
                    server=server,
                    host=host_label(site.host, configs[site.host]),
                    model=srv.model,
                    address=with_port(address, site.port),
                    keyed=site.key_file is not None,
                    local=local,
                )
            )
    return found
