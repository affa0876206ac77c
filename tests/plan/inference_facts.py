"""Scripted facts of a host whose model files and model servers are converged.

Built from the same config the deploy reads, so a converged host answers
exactly what the deploy expects to find: stamped model files, units or
plists as rendered, servers running and listening.
"""

from __future__ import annotations

from tasks import config
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.inference import llamacpp, models, servers
from tasks.supervise import health
from tests.plan import launchd_facts, llamacpp_facts, supervise_facts
from tests.plan.harness import simulated_platform

MTIME = 1_700_000_000


def model_files(cfg: config.KittyConfig, *, verified: bool = True) -> dict:
    wanted = models.wanted_files(cfg)
    lines = []
    for item in wanted:
        size = item.expected_bytes
        stamp = f"{item.file.sha256 or '0' * 64} {size} {MTIME}" if verified else ""
        lines.append(f"{item.rel}|{size} {MTIME}|{stamp}|-")
    return {
        f"cd {cfg.paths.models_dir} 2>/dev/null || exit 0; for rel in": lines,
        "find . -path ./.kitty-staging": [item.rel for item in wanted],
        "df -Pk": str(10**10),
    }


def listening(cfg: config.KittyConfig, *, os: str) -> dict:
    enabled = cfg.enabled_servers().values()
    if os == "linux":
        lines = [
            f'LISTEN 0 512 {s.host}:{s.port} 0.0.0.0:* users:(("llama-server",pid={4000 + s.port},fd=3))'
            for s in enabled
        ]
    else:
        lines = [line for s in enabled for line in (f"p{4000 + s.port}", "cllama-server", f"n{s.host}:{s.port}")]
    return {"ss -ltnpH": lines} if os == "linux" else {"lsof +c 0": lines}


def input_values(cfg: config.KittyConfig, plat: Platform, srv) -> dict[str, str]:
    """What a converged host holds for a server's inputs: the wanted build behind `current`, stamped files."""
    values = {}
    for item in servers.inputs(cfg, srv, build_id(cfg, plat), set()):
        values[item.name] = item.wanted if item.kind == "link" else _stamp(cfg, item.name.removeprefix("model "))
    return values


def build_id(cfg: config.KittyConfig, plat: Platform) -> str:
    """The build a converged host runs: the wanted one at the commit upstream names."""
    return llamacpp.wanted_build(cfg, plat, llamacpp_facts.UPSTREAM.get(cfg.llamacpp.ref)).id


def _stamp(cfg: config.KittyConfig, rel: str) -> str:
    for item in models.wanted_files(cfg):
        if item.rel == rel:
            return f"{item.file.sha256 or '0' * 64} {item.expected_bytes} {MTIME}"
    return ""


def supervised_servers(cfg: config.KittyConfig, plat: Platform, os: str) -> dict:
    facts = {}
    records = layout.records_dir(cfg)
    for name, srv in cfg.servers.items():
        if srv.enabled:
            prog = servers.program(cfg, plat, name, srv, build_id(cfg, plat))
            values = input_values(cfg, plat, srv)
            facts.update(supervise_facts.program(prog, os=os, records_dir=records, values=values))
        else:
            facts.update(
                supervise_facts.absent(
                    layout.server_label(cfg, name), layout.server_unit(name), os=os, records_dir=records
                )
            )
    family = servers.family(cfg)
    enabled = cfg.enabled_servers()
    if os == "macos":
        names = [layout.server_label(cfg, name) for name in enabled]
        facts.update(supervise_facts.installed(layout.LAUNCH_DAEMONS, family.label_prefix, names))
        facts.update(launchd_facts.directory(layout.LAUNCH_DAEMONS))
    else:
        names = [layout.server_unit(name) for name in enabled]
        facts.update(supervise_facts.installed(layout.SYSTEMD_UNITS, family.unit_prefix, names))
        facts.update(launchd_facts.directory(layout.SYSTEMD_UNITS, group="root"))
    return facts


def wait_script(cfg: config.KittyConfig) -> dict:
    return {
        **launchd_facts.file(layout.wait_script(cfg), health.WAIT_SCRIPT.read_text(), mode="rwxr-xr-x"),
        **launchd_facts.directory(cfg.paths.opt_dir),
    }


def converged(data: dict, *, os: str, user: str, arch: str = "x86_64") -> dict:
    cfg = config.load(data)
    plat = simulated_platform(os, user, arch)
    supervisor = supervised_servers(cfg, plat, os)
    return {**model_files(cfg), **listening(cfg, os=os), **supervisor, **wait_script(cfg)}
