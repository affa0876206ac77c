"""Scripted facts of a host whose application stack is converged (tasks/app/stack.py and its parts), or parts of it.

Returns dicts to merge into a host's responses (tests/plan/hosts.py) before the
generic keys, since the first match wins.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tasks import config
from tasks.app import runtime, secrets
from tasks.app.compose import ARCH, COMPOSE_PLUGIN
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.supervise import launchd as supervise_launchd
from tests.plan import launchd_facts, observability_facts, supervise_facts
from tests.plan.harness import simulated_platform

ROOT = Path(__file__).resolve().parents[2]
HEAD = "0123456789abcdef0123456789abcdef01234567"


def docker_info(ok: bool = True) -> dict:
    return {"docker info --format": "version 27.3.1" if ok else "error Cannot connect to the Docker daemon"}


def checkout(cfg: config.KittyConfig, *, head: str | None = HEAD, wanted: str | None = HEAD) -> dict:
    """GitCheckout: a clone at `head` whose local `ref` resolves to `wanted` (head None: no clone)."""
    if head is None:
        return {"rev-parse -q --verify HEAD": []}
    return {"rev-parse -q --verify HEAD": [f"head {head}", f"wanted {wanted or ''}", f"origin {cfg.stack.repo_url}"]}


def env_file(cfg: config.KittyConfig, user: str, content: str | None = None, mode: str = "rw-------") -> dict:
    """The .env as rendered now (or `content`): File and Sha256File facts."""
    path = layout.env_file(cfg)
    text = secrets.render_env(cfg, secrets.secret_values(cfg.stack, ROOT)) if content is None else content
    return {
        f"sha256sum {path} ": f"{hashlib.sha256(text.encode()).hexdigest()}  {path}",
        f"test -L {path} )": f"user={user} group=staff mode=-{mode} atime=0 mtime=0 ctime=0 size={len(text)} '{path}'",
    }


def compose(cfg: config.KittyConfig, *, containers: dict[str, dict] | None = None, error: str | None = None) -> dict:
    """ComposeState: every configured service running at its current hash, unless `containers` says otherwise.

    `containers[name]` overrides fields of one container (state, hash, image); None removes it.
    """
    if error:
        return {"config --hash": [f"error {error}"]}
    lines = [f"service {name}" for name in cfg.stack.services]
    lines += [f"hash {name} hash-{name}" for name in cfg.stack.services]
    for name in cfg.stack.services:
        fields = {
            "id": f"id-{name}",
            "state": "running",
            "health": "healthy",
            "hash": f"hash-{name}",
            "image": "current",
        }
        override = (containers or {}).get(name, {})
        if override is None:
            continue
        fields.update(override)
        lines.append(f"container {name} {' '.join(fields[k] for k in ('id', 'state', 'health', 'hash', 'image'))}")
    return {"config --hash": lines}


def colima_program(cfg: config.KittyConfig, plat: Platform):
    return runtime.colima_program(cfg, plat, f"/Users/{plat.user}")


def colima_plist(cfg: config.KittyConfig, plat: Platform) -> str:
    return supervise_launchd.render(colima_program(cfg, plat))


def colima(cfg: config.KittyConfig, plat: Platform, *, loaded: bool = True, plist: str | None = "same") -> dict:
    """colima's LaunchDaemon as kitty-ops left it: loaded, its plist as rendered, a record of its start,
    and its start wrapper (templates/colima-start.sh)."""
    wrapper = observability_facts.file_state(layout.colima_wrapper(cfg), runtime.COLIMA_WRAPPER.read_text(), "755")
    return wrapper | supervise_facts.program(
        colima_program(cfg, plat),
        os="macos",
        records_dir=layout.records_dir(cfg),
        values={},
        running=loaded,
        definition=plist,
    )


def docker_cli_config(user: str, config: dict | None, *, raw: str | None = None) -> dict:
    """DockerCliConfig: the admin's ~/.docker/config.json holding `config` (None: no file), or `raw` text."""
    path = f"/Users/{user}/.docker/config.json"
    if config is None and raw is None:
        return {f"[ ! -e {path} ]": "absent"}
    text = raw if raw is not None else json.dumps(config, indent="\t")
    return {f"[ ! -e {path} ]": ["json", *text.splitlines()]}


def linux_engine(plat: Platform) -> dict:
    pinned = config.ComposePlugin().sha256_for(ARCH.get(plat.arch, plat.arch))
    return {
        "--property SubState docker.service": ["Id=docker.service", "SubState=running"],
        "--property UnitFileState docker.service": ["Id=docker.service", "UnitFileState=enabled"],
        **launchd_facts.file(COMPOSE_PLUGIN, "compose", user="root", group="root", mode="rwxr-xr-x"),
        # The pinned release binary (config.ComposePlugin's sha256 for this arch).
        f"sha256sum {COMPOSE_PLUGIN} ": f"{pinned}  {COMPOSE_PLUGIN}",
        **launchd_facts.directory(COMPOSE_PLUGIN.rpartition("/")[0], user="root", group="root"),
    }


def converged(data: dict, *, os: str, user: str, arch: str = "x86_64") -> dict:
    cfg = config.load(data)
    plat = simulated_platform(os, user, arch)
    group = "staff" if os == "macos" else user
    kind = runtime.runtime_of(cfg.stack, plat) if cfg.stack.runtime != "auto" else plat.container_runtimes[0]
    facts = {
        **checkout(cfg),
        **env_file(cfg, user),
        **compose(cfg),
        **docker_info(),
        **launchd_facts.directory(cfg.paths.kitty_root, user=user, group=group),
    }
    if kind == "colima":
        facts.update(colima(cfg, plat))
        facts.update(docker_cli_config(user, {"cliPluginsExtraDirs": [f"{plat.brew_prefix}/lib/docker/cli-plugins"]}))
    elif kind == "engine":
        facts.update(linux_engine(plat))
    return facts
