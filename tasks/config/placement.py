"""Which inference host runs which model server, what it binds to, and how each app host reaches it.

Computed once from the whole inventory (every host's data), before any operation:

    kitty_serves    on an inference host: the servers (names in kitty_servers) it runs.
                    None (the default): every enabled server, today's single-host case.
    kitty_address   the address other hosts reach this host at. Default: its inventory
                    name (studio2.local); `@local` and other `@connector` hosts have none.

Until a host sets kitty_serves, and while every app host is also an inference host,
each host is a KITTY host of its own, exactly as before (KITTY_HOSTS=a,b converges two).
Otherwise a server runs on exactly one inference host, or on several when it says
`replicas: true`.
It binds to its `host` (127.0.0.1 by default) while only an app host on the same machine
uses it; when an app host elsewhere uses it, it binds to its host's kitty_address (never
0.0.0.0 unless its `host` says so) and gets a key: api_key_file defaults to
`<opt_dir>/keys/<server>.key`, made once on the controller (tasks/inference/api_keys.py) and
passed to the app as LLAMACPP_<NAME>_API_KEY. The app host's .env gets
LLAMACPP_<NAME>_HOST from here (tasks/app/secrets.py), so an address is never typed twice.

`host_config(host)` is what a deploy file calls: the host's validated config, seen
from that host: servers placed elsewhere are not enabled here (so the supervisor
removes them, the memory budget and the health table skip them), servers placed here
carry their bind address and key file, and an app host carries the wiring.
Every error names the host and the field; all of them are reported at once.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field

from tasks import config
from tasks.config import ConfigError, KittyConfig, ScrapeTarget, Wire, scrape_targets

# What llama-server's --host and a URL accept; the same rule as kitty_stack.model_host.
ADDRESS = re.compile(r"^[A-Za-z0-9.:\[\]-]+$")
WILDCARD = ("0.0.0.0", "::")


@dataclass(frozen=True)
class HostView:
    """One inventory host as placement sees it (pyinfra-free, for the unit tests)."""

    name: str
    groups: tuple[str, ...]
    cfg: KittyConfig
    serves: object = None
    address: object = None


@dataclass(frozen=True)
class Site:
    """One server on one host."""

    server: str
    host: str
    bind: str
    port: int
    # Set when the server listens beyond loopback: where its key lives on the host.
    key_file: str | None


@dataclass(frozen=True)
class Placement:
    # Server -> the hosts that run it, in inventory order.
    sites: dict[str, tuple[Site, ...]]
    # Host -> the address other hosts reach it at (None: only its own loopback).
    addresses: dict[str, str | None]
    # App host -> {server: Wire}: what its .env points at.
    wiring: dict[str, dict[str, Wire]] = field(default_factory=dict)
    # App host -> what its Prometheus scrapes: every server of every host (tasks/config/scrape_targets.py).
    scrapes: dict[str, list[ScrapeTarget]] = field(default_factory=dict)

    def served_on(self, host_name: str) -> dict[str, Site]:
        return {server: site for server, sites in self.sites.items() for site in sites if site.host == host_name}

    def hosts_of(self, server: str) -> tuple[str, ...]:
        return tuple(site.host for site in self.sites.get(server, ()))


def default_address(host_name: str) -> str | None:
    """A host's inventory name is its address, except pyinfra's `@connector` names (@local, @docker/...)."""
    return None if host_name.startswith("@") else host_name.rpartition("@")[2]


def url_host(address: str) -> str:
    """An address as it goes in a URL: an IPv6 literal in brackets."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def is_loopback(address: str) -> bool:
    return bool(config.LOOPBACK.match(address))


def compute(views: Iterable[HostView]) -> Placement:
    """The placement of every enabled server over these hosts; ConfigError listing every problem."""
    views = list(views)
    errors: list[str] = []
    addresses: dict[str, str | None] = {}
    serving: dict[str, list[str]] = {}
    by_name = {view.name: view for view in views}

    for view in views:
        addresses[view.name] = _address(view, errors)
        if "inference" not in view.groups:
            if view.serves is not None:
                errors.append(f"{view.name}: kitty_serves: set on a host outside the inference group (it runs none)")
            continue
        for server in _serves(view, errors):
            serving.setdefault(server, []).append(view.name)

    app_hosts = [v.name for v in views if "application" in v.groups and v.cfg.stack.enabled]
    inference_hosts = [v.name for v in views if "inference" in v.groups]
    if not inference_hosts or (
        all(v.serves is None for v in views) and all(app in inference_hosts for app in app_hosts)
    ):
        # Nothing placed: each host is a KITTY host of its own, as before placement existed
        # (KITTY_HOSTS=a,b converges two), or the servers are outside this inventory. Every
        # inference host runs its enabled servers on its `host`, and the .env says model_host.
        if errors:
            raise ConfigError("invalid placement of the model servers:\n" + "\n".join(f"  - {e}" for e in errors))
        return _self_contained(views, addresses)
    wanted: dict[str, list[str]] = {}
    for view in views:
        if view.name in app_hosts or view.name in inference_hosts:
            for server in view.cfg.enabled_servers():
                wanted.setdefault(server, []).append(view.name)
    for server, hosts in wanted.items():
        if server not in serving:
            errors.append(
                f"kitty_servers.{server}: enabled (on {', '.join(hosts)}) but no inference host runs it: "
                f"add it to kitty_serves of one of {', '.join(inference_hosts)}, "
                "or set enabled: false"
            )
    for server, hosts in serving.items():
        replicas = all(by_name[h].cfg.servers[server].replicas for h in hosts)
        if len(hosts) > 1 and not replicas:
            errors.append(
                f"kitty_servers.{server}: runs on {', '.join(hosts)} (their kitty_serves, or none set: every "
                "enabled server): list it in the kitty_serves of one host, or set replicas: true on it"
            )

    sites: dict[str, tuple[Site, ...]] = {}
    for server, hosts in serving.items():
        found = []
        for host_name in hosts:
            remote_users = [a for a in app_hosts if a != host_name and server in by_name[a].cfg.enabled_servers()]
            site = _site(by_name[host_name], server, addresses[host_name], remote_users, errors)
            if site:
                found.append(site)
        sites[server] = tuple(found)

    wiring = {app: _wiring(by_name[app], sites, addresses) for app in app_hosts}
    if errors:
        raise ConfigError("invalid placement of the model servers:\n" + "\n".join(f"  - {line}" for line in errors))
    configs = {view.name: view.cfg for view in views}
    scrapes = {app: scrape_targets.for_app_host(app, sites, addresses, configs) for app in app_hosts}
    return Placement(sites=sites, addresses=addresses, wiring=wiring, scrapes=scrapes)


def _self_contained(views: list[HostView], addresses: dict[str, str | None]) -> Placement:
    sites: dict[str, list[Site]] = {}
    for view in views:
        if "inference" in view.groups:
            for name, srv in view.cfg.enabled_servers().items():
                site = Site(server=name, host=view.name, bind=srv.host, port=srv.port, key_file=srv.api_key_file)
                sites.setdefault(name, []).append(site)
    return Placement(sites={name: tuple(found) for name, found in sites.items()}, addresses=addresses)


def _address(view: HostView, errors: list[str]) -> str | None:
    if view.address is None:
        return default_address(view.name)
    if not isinstance(view.address, str) or not ADDRESS.match(view.address):
        errors.append(f"{view.name}: kitty_address: {view.address!r} is not a host name or IP address")
        return None
    if view.address in WILDCARD:
        errors.append(f"{view.name}: kitty_address: {view.address!r} is not an address other hosts can reach")
        return None
    return view.address


def _serves(view: HostView, errors: list[str]) -> list[str]:
    """The servers this inference host runs: its kitty_serves, else every enabled server."""
    enabled = view.cfg.enabled_servers()
    if view.serves is None:
        return list(enabled)
    if not isinstance(view.serves, (list, tuple)) or not all(isinstance(s, str) for s in view.serves):
        errors.append(f"{view.name}: kitty_serves: must be a list of server names, got {view.serves!r}")
        return []
    found = []
    for server in view.serves:
        if server not in view.cfg.servers:
            known = ", ".join(view.cfg.servers) or "none"
            errors.append(f"{view.name}: kitty_serves: unknown server {server!r} (kitty_servers has: {known})")
        elif server not in enabled:
            errors.append(f"{view.name}: kitty_serves: server {server!r} is disabled (kitty_servers.{server}.enabled)")
        elif server in found:
            errors.append(f"{view.name}: kitty_serves: server {server!r} is listed twice")
        else:
            found.append(server)
    return found


def _site(view: HostView, server: str, address: str | None, remote_users: list[str], errors: list[str]) -> Site | None:
    srv = view.cfg.servers[server]
    bind = srv.host
    if remote_users and is_loopback(bind):
        if address is None:
            errors.append(
                f"{view.name}: kitty_address: server {server!r} runs here and app host "
                f"{', '.join(remote_users)} uses it, but {view.name} has no address other hosts reach: "
                "set kitty_address"
            )
            return None
        bind = address
    key_file = srv.api_key_file
    if key_file is None and not is_loopback(bind):
        # Beyond loopback a server answers only with its key: derived, never left out.
        key_file = f"{view.cfg.paths.opt_dir.rstrip('/')}/keys/{server}.key"
    return Site(server=server, host=view.name, bind=bind, port=srv.port, key_file=key_file)


def _wiring(app: HostView, sites: dict[str, tuple[Site, ...]], addresses: dict[str, str | None]) -> dict[str, Wire]:
    """{server: Wire} for one app host: its own host's copy first, else the first host that runs it."""
    wires = {}
    for server, found in sites.items():
        # Only what this app host's own config enables, as its .env always had.
        if not found or server not in app.cfg.enabled_servers():
            continue
        site = next((s for s in found if s.host == app.name), found[0])
        if site.host == app.name and (is_loopback(site.bind) or site.bind in WILDCARD):
            # On the same machine: the containers' name for it (host.docker.internal).
            where = app.cfg.stack.model_host
        elif site.bind in WILDCARD or is_loopback(site.bind):
            where = addresses[site.host] or site.bind
        else:
            where = site.bind
        wires[server] = Wire(url=f"http://{url_host(where)}:{site.port}", keyed=site.key_file is not None)
    return wires


def local_config(cfg: KittyConfig, placement: Placement, host_name: str, groups: Iterable[str]) -> KittyConfig:
    """`cfg` as host `host_name` runs it: only the servers placed here enabled, with their bind
    address and key file; on an app host, the wiring of every server."""
    groups = tuple(groups)
    wiring = placement.wiring.get(host_name) if "application" in groups else None
    scrape = placement.scrapes.get(host_name) if "application" in groups else None
    if "inference" not in groups:
        # It runs no server (every step that does is for the inference group); without
        # wiring, its .env names its servers behind model_host, as before.
        return cfg.model_copy(update={"wiring": wiring, "scrape": scrape}) if wiring is not None else cfg
    placed = placement.served_on(host_name)
    servers, elsewhere = {}, {}
    for name, srv in cfg.servers.items():
        site = placed.get(name)
        if site is None:
            servers[name] = srv.model_copy(update={"enabled": False}) if srv.enabled else srv
            if srv.enabled and placement.hosts_of(name):
                elsewhere[name] = list(placement.hosts_of(name))
        else:
            servers[name] = srv.model_copy(update={"host": site.bind, "api_key_file": site.key_file})
    return cfg.model_copy(update={"servers": servers, "wiring": wiring, "elsewhere": elsewhere, "scrape": scrape})


# --- pyinfra's inventory ------------------------------------------------------------------

# One per inventory: each host's deploy file asks, and the answer must be the same for all.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def views_of(inventory) -> list[HostView]:
    """Every host of a pyinfra inventory, its config validated (ConfigError naming the host)."""
    views = []
    for inv_host in inventory:
        try:
            cfg = config.load(inv_host.data)
        except ConfigError as error:
            raise ConfigError(f"{inv_host.name}: {error}") from None
        views.append(
            HostView(
                name=inv_host.name,
                groups=tuple(inv_host.groups),
                cfg=cfg,
                serves=inv_host.data.get("kitty_serves"),
                address=inv_host.data.get("kitty_address"),
            )
        )
    return views


def of_inventory(inventory) -> Placement:
    """The placement for this inventory, computed once per run (every host's deploy file asks)."""
    if inventory not in _CACHE:
        _CACHE[inventory] = compute(views_of(inventory))
    return _CACHE[inventory]


def host_config(current_host=None) -> KittyConfig:
    """The current host's config (pyinfra's `host`), placed: what a deploy file works with."""
    from pyinfra import host as context_host

    if current_host is None:
        current_host = context_host
    cfg = config.load(current_host.data)
    placement = of_inventory(current_host.inventory)
    return local_config(cfg, placement, current_host.name, current_host.groups)
