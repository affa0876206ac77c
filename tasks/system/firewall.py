"""A server beyond loopback answers only the hosts that use it: a firewall in front of its key.

A model server that an app on another host uses listens on its host's address with an API key
(tasks/config/placement.py, tasks/inference/api_keys.py); an rpc-server worker beyond loopback has no key at
all. The key is one layer. This is the second: on each inference host, only the addresses of
the hosts that use each such port may connect to it (the placement's clients: the app hosts
wired to a server here, the hosts of the servers split over this worker), plus what its
`allow_from` adds; every other address gets a refused connection. Loopback always passes
(health checks, the host's own app); on Linux so do Docker's bridges when this host's own app
uses the server (its containers reach it through them).

    Linux   an nftables table of our own, `inet kitty_ops` (never another table, never
            /etc/nftables.conf), from /etc/kitty-ops/firewall.nft, loaded now and at every
            boot by kitty-firewall.service (before the network, after nftables.service)
    macOS   a pf anchor under Apple's, `com.apple/kitty-ops` (evaluated by the stock
            /etc/pf.conf, which is never edited), from /etc/pf.anchors/com.kitty-ops, loaded
            now and at every boot by a LaunchDaemon; pf enabled (`pfctl -E`) when it is not

A client is named by an IP address: a host's `kitty_address` (its inventory name by default)
must then be an IP, the one the server's host sees it connect from. The ruleset carries its
own hash (nft's table comment, pf's rule labels): a converged host compares, and loads nothing.
When no port of the host needs it any more (the server moved or was disabled), the table or
anchor, its file and its boot job are removed.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from io import StringIO
from weakref import WeakKeyDictionary

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server

from tasks import supervise
from tasks.config import KittyConfig, placement
from tasks.host.platform import Platform
from tasks.supervise import Program, Slot
from tasks.system import prerequisites

NFT_FILE = "/etc/kitty-ops/firewall.nft"
NFT_TABLE = "inet kitty_ops"
UNIT = "kitty-firewall.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT}"
PF_FILE = "/etc/pf.anchors/com.kitty-ops"
PF_ANCHOR = "com.apple/kitty-ops"
PF_LABEL = "com.kitty.firewall"
PFCTL = "/sbin/pfctl"
# pf on, unless it is: `-E` takes a reference that keeps it on (pfctl(8)).
ENABLE_PF = f"{PFCTL} -s info | grep -q 'Status: Enabled' || {PFCTL} -E"
# Docker's bridges on Linux: the default one and compose's networks.
BRIDGES = ("docker0", "br-*")


@dataclass(frozen=True)
class Rule:
    """One port of this host and who may connect to it."""

    port: int
    what: str  # "server q4", "rpc worker"
    clients: tuple[str, ...]
    # This host's own app uses it: Docker's bridges pass too (Linux).
    local_app: bool = False


# --- who uses what: from the whole inventory ---------------------------------------------------

_VIEWS: WeakKeyDictionary = WeakKeyDictionary()


def _views(inventory) -> dict[str, placement.HostView]:
    if inventory not in _VIEWS:
        _VIEWS[inventory] = {view.name: view for view in placement.views_of(inventory)}
    return _VIEWS[inventory]


def rules_for(host_name: str, views: dict[str, placement.HostView], placed: placement.Placement) -> list[Rule]:
    """The ports of `host_name` beyond loopback and their clients; DeployError naming what is unusable."""
    me = views[host_name]
    errors: list[str] = []
    rules: list[Rule] = []
    app_hosts = [v.name for v in views.values() if "application" in v.groups and v.cfg.stack.enabled]
    for name, site in placed.served_on(host_name).items():
        if placement.is_loopback(site.bind):
            continue
        users, local = [], False
        for app in app_hosts:
            if name not in views[app].cfg.enabled_servers():
                continue
            sites = placed.sites.get(name, ())
            chosen = next((s for s in sites if s.host == app), sites[0] if sites else None)
            if chosen is None or chosen.host != host_name:
                continue
            if app == host_name:
                local = True
            else:
                users.append(app)
        srv = me.cfg.servers[name]
        clients = _addresses(users, placed, f"server {name!r}", host_name, errors)
        rules.append(Rule(site.port, f"server {name}", tuple(clients + list(srv.allow_from)), local))
    worker = me.cfg.rpc_worker if "inference" in me.groups else None
    if worker is not None and not placement.is_loopback(worker.host):
        mains = sorted(
            {
                site.host
                for name, sites in placed.sites.items()
                for site in sites
                if site.host != host_name and host_name in views[site.host].cfg.servers[name].rpc_workers
            }
        )
        clients = _addresses(mains, placed, "its rpc-server", host_name, errors)
        rules.append(Rule(worker.port, "rpc worker", tuple(clients + list(worker.allow_from))))
    if errors:
        raise DeployError(
            f"{host_name}: the firewall of the ports beyond loopback cannot name their clients:\n"
            + "\n".join(f"  - {line}" for line in errors)
        )
    return sorted(rules, key=lambda rule: rule.port)


def _addresses(users: list[str], placed: placement.Placement, what: str, here: str, errors: list[str]) -> list[str]:
    found = []
    for name in users:
        address = placed.addresses.get(name)
        problem = _not_an_ip(address)
        if problem:
            errors.append(
                f"{name}: kitty_address: {what} on {here} lets in only the hosts that use it, by IP address, "
                f"and {name}'s is {problem}: set its kitty_address to the IP address {here} sees it connect from"
            )
        else:
            found.append(address.strip("[]"))
    return sorted(set(found))


def _not_an_ip(address: str | None) -> str | None:
    if address is None:
        return "unknown"
    try:
        parsed = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return f"{address!r}, a name"
    if parsed.is_loopback:
        return f"{address!r}, loopback"
    return None


def wanted(current_host=None) -> list[Rule]:
    """This host's rules, from the inventory (computed where every deploy file computes the placement)."""
    current_host = host if current_host is None else current_host
    inventory = current_host.inventory
    return rules_for(current_host.name, _views(inventory), placement.of_inventory(inventory))


# --- the rulesets --------------------------------------------------------------------------------


def _split(addresses) -> tuple[list[str], list[str]]:
    v4 = [a for a in addresses if ipaddress.ip_network(a, strict=False).version == 4]
    return v4, [a for a in addresses if a not in v4]


def digest(rules: list[Rule]) -> str:
    text = "\n".join(f"{r.port} {r.what} {','.join(r.clients)} {r.local_app}" for r in rules)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def render_nft(rules: list[Rule]) -> str:
    """/etc/kitty-ops/firewall.nft: `nft -f` replaces the table whole, in one transaction."""
    mark = digest(rules)
    # The files on hosts still name tasks/system/firewall.py, the module's path before the wings: a new
    # path there would rewrite and reload every host's rules for a comment.
    lines = [
        f"# Written by kitty-ops (tasks/firewall.py), ruleset {mark}: edit the host data and converge instead.",
        f"table {NFT_TABLE}",
        f"delete table {NFT_TABLE}",
        f"table {NFT_TABLE} {{",
        f'\tcomment "kitty-ops {mark}"',
        "\tchain input {",
        "\t\ttype filter hook input priority filter - 5; policy accept;",
        '\t\tiif "lo" accept',
    ]
    for rule in rules:
        v4, v6 = _split(rule.clients)
        lines.append(f"\t\t# {rule.what}: the hosts that use it")
        if v4:
            lines.append(f"\t\ttcp dport {rule.port} ip saddr {{ {', '.join(v4)} }} accept")
        if v6:
            lines.append(f"\t\ttcp dport {rule.port} ip6 saddr {{ {', '.join(v6)} }} accept")
        if rule.local_app:
            lines += [f'\t\ttcp dport {rule.port} iifname "{bridge}" accept' for bridge in BRIDGES]
        lines.append(f"\t\ttcp dport {rule.port} reject with tcp reset")
    lines += ["\t}", "}", ""]
    return "\n".join(lines)


def render_pf(rules: list[Rule]) -> str:
    """/etc/pf.anchors/com.kitty-ops: loaded into com.apple/kitty-ops (`pfctl -a ... -f`)."""
    mark = digest(rules)
    label = f'label "kitty-ops {mark}"'
    lines = [f"# Written by kitty-ops (tasks/firewall.py), ruleset {mark}: edit the host data and converge instead."]
    for rule in rules:
        table = f"kitty_{rule.port}"
        lines.append(f"# {rule.what}: the hosts that use it")
        lines.append(f"pass in quick on lo0 proto tcp from any to any port {rule.port} {label}")
        if rule.clients:
            lines.append(f"table <{table}> const {{ {', '.join(rule.clients)} }}")
            lines.append(f"pass in quick proto tcp from <{table}> to any port {rule.port} {label}")
        lines.append(f"block return in quick proto tcp from any to any port {rule.port} {label}")
    return "\n".join(lines) + "\n"


UNIT_TEXT = f"""# Written by kitty-ops (tasks/firewall.py): the firewall of the KITTY servers beyond loopback.
[Unit]
Description=KITTY firewall: servers beyond loopback answer only the hosts that use them
DefaultDependencies=no
Before=network-pre.target
Wants=network-pre.target
# Its `flush ruleset`, where enabled, would otherwise remove this table after it was loaded.
After=nftables.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f {NFT_FILE}
ExecStop=-/usr/sbin/nft delete table {NFT_TABLE}

[Install]
WantedBy=multi-user.target
"""


def boot_program() -> Program:
    """macOS: the LaunchDaemon that loads the anchor at every boot (and enables pf), run once at load."""
    return Program(
        name="firewall at boot",
        label=PF_LABEL,
        unit="",
        description="KITTY firewall: servers beyond loopback answer only the hosts that use them",
        argv=[
            "/bin/sh",
            "-c",
            f"{PFCTL} -a {PF_ANCHOR} -f {PF_FILE} && {{ {PFCTL} -s info | grep -q 'Status: Enabled' || {PFCTL} -E; }}",
        ],
        log="/var/log/kitty-firewall.log",
        working_directory="/",
        keep_alive=False,
        open_files=None,
        stop_timeout=5,
    )


# --- on the host ---------------------------------------------------------------------------------


class FirewallState(FactBase):
    """{"file": our ruleset file is there, "loaded": the hash of the ruleset loaded (None: none),
    "enabled": pf is on (macOS), "unit": the boot unit is enabled (Linux)}. The live ruleset is
    read only where our file is: a host that never had one is not asked (nft or pfctl unused)."""

    def command(self, firewall: str) -> str:
        """`firewall`: "pf" or "nftables" (Platform.firewall)."""
        # nft's table comment, pf's rule labels: "kitty-ops <hash>" (BSD sed: no \| in a pattern).
        loaded = "sed -n 's/.*\"kitty-ops \\([0-9a-f]*\\)\".*/loaded \\1/p' | head -n 1"
        if firewall == "pf":
            return (
                f"if [ -f {PF_FILE} ]; then echo file; "
                f"{PFCTL} -a {PF_ANCHOR} -sr 2>/dev/null | {loaded}; "
                f"{PFCTL} -s info 2>/dev/null | sed -n 's/^Status: \\([A-Za-z]*\\).*/status \\1/p'; fi; true"
            )
        return (
            f"if [ -f {NFT_FILE} ]; then echo file; "
            f"nft list table {NFT_TABLE} 2>/dev/null | {loaded}; "
            f"systemctl is-enabled {UNIT} 2>/dev/null | sed -n 's/^enabled$/unit enabled/p'; "
            "fi; true"
        )

    def process(self, output) -> dict:
        state = {"file": False, "loaded": None, "enabled": None, "unit": False}
        for line in output:
            kind, _, value = line.strip().partition(" ")
            if kind == "file":
                state["file"] = True
            elif kind == "loaded" and value:
                state["loaded"] = value
            elif kind == "status":
                state["enabled"] = value == "Enabled"
            elif kind == "unit":
                state["unit"] = value == "enabled"
        return state


@deploy("Firewall")
def converge(cfg: KittyConfig, plat: Platform) -> None:
    """This host's firewall as the placement wants it: loaded, kept at boot, or removed with the last port."""
    rules = wanted()
    state = host.get_fact(FirewallState, firewall=plat.firewall, _sudo=plat.sudo) or {}
    if not rules:
        if state.get("file"):
            _remove(cfg, plat)
        return
    mark = digest(rules)
    names = ", ".join(f"{r.what} ({r.port})" for r in rules)
    if plat.firewall == "pf":
        _root_file(f"pf anchor: {names}", render_pf(rules), PF_FILE, "wheel", plat)
        if state.get("loaded") != mark or not state.get("enabled"):
            server.shell(
                name=f"Load the pf anchor {PF_ANCHOR} ({mark})",
                commands=[
                    f"{PFCTL} -a {PF_ANCHOR} -f {PF_FILE}",
                    ENABLE_PF,
                ],
                _sudo=plat.sudo,
            )
        supervise.converge(cfg, plat, [Slot(PF_LABEL, "", boot_program())])
        return
    prerequisites.install_apt_missing(
        ["nftables"], plat, refresh_name="Refresh the apt index (nftables)", install_name="Install nftables"
    )
    _root_file(f"nftables ruleset: {names}", render_nft(rules), NFT_FILE, "root", plat, create_remote_dir=True)
    unit = _root_file(f"Boot unit {UNIT}", UNIT_TEXT, UNIT_FILE, "root", plat)
    enable = {"name": f"Enable {UNIT} (the ruleset at every boot)", "_sudo": plat.sudo}
    if state.get("unit"):
        server.shell(commands=["systemctl daemon-reload"], _if=unit.did_change, **enable)
    else:
        server.shell(commands=["systemctl daemon-reload", f"systemctl enable {UNIT}"], **enable)
    if state.get("loaded") != mark:
        server.shell(
            name=f"Load the nftables table {NFT_TABLE} ({mark})", commands=[f"nft -f {NFT_FILE}"], _sudo=plat.sudo
        )


@deploy("Firewall removed")
def remove(cfg: KittyConfig, plat: Platform) -> None:
    """The table or anchor, its file and its boot job, whatever the placement says (remove.py)."""
    state = host.get_fact(FirewallState, firewall=plat.firewall, _sudo=plat.sudo) or {}
    if state.get("file"):
        _remove(cfg, plat)


def _root_file(name: str, text: str, dest: str, group: str, plat: Platform, **more):
    """A file of root's, 0644: world-readable, nothing secret in it (addresses and ports)."""
    return files.put(
        name=name, src=StringIO(text), dest=dest, user="root", group=group, mode="644", _sudo=plat.sudo, **more
    )


def _remove(cfg: KittyConfig, plat: Platform) -> None:
    if plat.firewall == "pf":
        server.shell(
            name=f"Remove the pf anchor {PF_ANCHOR} (no server beyond loopback here)",
            commands=[f"{PFCTL} -a {PF_ANCHOR} -F all 2>/dev/null || true", f"rm -f {PF_FILE}"],
            _sudo=plat.sudo,
        )
        supervise.converge(cfg, plat, [Slot(PF_LABEL, "", None, "firewall at boot", "no server beyond loopback")])
        return
    server.shell(
        name=f"Remove the nftables table {NFT_TABLE} (no server beyond loopback here)",
        commands=[
            f"if [ -f {UNIT_FILE} ]; then systemctl disable {UNIT}; fi",
            f"nft delete table {NFT_TABLE} 2>/dev/null || true",
            f"rm -f {NFT_FILE} {UNIT_FILE}",
            "systemctl daemon-reload",
        ],
        _sudo=plat.sudo,
    )
