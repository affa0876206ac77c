"""Scripted facts of a host whose model files and model servers are converged.

Built from the same config the deploy reads, so a converged host answers
exactly what the deploy expects to find: stamped model files, units or
plists as rendered, servers running and listening.
"""

from __future__ import annotations

from tasks import config, launchd, llamacpp, models, servers
from tasks.platform import Platform
from tests.plan import launchd_facts
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


def linux_servers(cfg: config.KittyConfig, plat: Platform) -> dict:
    facts = {}
    for name, srv in cfg.servers.items():
        unit = servers.unit_name(name)
        if srv.enabled:
            facts.update(
                launchd_facts.file(
                    f"{servers.UNIT_DIR}/{unit}", servers.render_unit(cfg, plat, name, srv), group="root"
                )
            )
            facts[f"show --all --property Id --property SubState {unit}"] = [f"Id={unit}", "SubState=running"]
            facts[f"show --all --property Id --property UnitFileState {unit}"] = [f"Id={unit}", "UnitFileState=enabled"]
        else:
            facts[f"show --all --property Id --property SubState {unit}"] = []
    facts.update(launchd_facts.directory(servers.UNIT_DIR, group="root"))
    facts["ls -1 -- kitty-llama-*.service"] = [servers.unit_name(name) for name, s in cfg.servers.items() if s.enabled]
    return facts


def macos_servers(cfg: config.KittyConfig, plat: Platform) -> dict:
    facts = {}
    user = servers.service_user(cfg, plat)
    for name, srv in cfg.enabled_servers().items():
        job_label = launchd.label(cfg, name)
        plist = launchd.server_plist(cfg, name, srv, binary=llamacpp.binary(cfg), user=user)
        facts.update(launchd_facts.job(f"system/{job_label}", loaded=True))
        facts.update(launchd_facts.file(launchd.plist_path(job_label, "daemon"), plist))
        facts.update(
            launchd_facts.file(
                f"{cfg.paths.opt_dir}/state/launchd/{name}.inputs", servers._launchd_inputs(cfg, plat, srv) + "\n"
            )
        )
    facts.update(launchd_facts.directory(launchd.DAEMONS_DIR))
    facts.update(launchd_facts.directory(f"{cfg.paths.opt_dir}/state/launchd"))
    return facts


def wait_script(cfg: config.KittyConfig) -> dict:
    with open(servers.TEMPLATES / "wait-healthy.sh") as script:
        return {
            **launchd_facts.file(servers._wait_script(cfg), script.read(), mode="rwxr-xr-x"),
            **launchd_facts.directory(cfg.paths.opt_dir),
        }


def converged(data: dict, *, os: str, user: str, arch: str = "x86_64") -> dict:
    cfg = config.load(data)
    plat = simulated_platform(os, user, arch)
    supervisor = linux_servers(cfg, plat) if os == "linux" else macos_servers(cfg, plat)
    return {**model_files(cfg), **listening(cfg, os=os), **supervisor, **wait_script(cfg)}
