"""Scripted facts of a host whose llama.cpp is converged: the wanted build installed and current."""

from __future__ import annotations

from pathlib import Path

from tasks import config, llamacpp
from tests.plan import launchd_facts
from tests.plan.harness import simulated_platform

BUILD_SCRIPT = Path(llamacpp.BUILD_SCRIPT).read_text()


def builds(root: str, current: str | None, installed: list[tuple[str, bool]]) -> dict:
    """The LlamaCppBuilds fact: `installed` newest first, as (build id, runs)."""
    lines = [f"current {current or ''}"] + [f"build {bid} {'ok' if ok else 'broken'}" for bid, ok in installed]
    folders = {}
    for build_id, _ in installed:
        folders.update(launchd_facts.directory(f"{root}/builds/{build_id}", user="admin", group="admin"))
    return {f'root={root}; [ -d "$root/builds" ]': lines, **folders}


def converged(data: dict, *, os: str, user: str, arch: str = "x86_64") -> dict:
    cfg = config.load(data)
    plat = simulated_platform(os, user, arch)
    wanted = llamacpp.wanted_build(cfg, plat)
    root = llamacpp.root(cfg)
    group = "staff" if os == "macos" else user
    return {
        **builds(root, wanted.id, [(wanted.id, True)]),
        **launchd_facts.directory(root, user=user, group=group),
        **launchd_facts.directory(cfg.paths.logs_dir, user=user, group=group),
        **launchd_facts.file(f"{root}/build.sh", BUILD_SCRIPT, user=user, group=group, mode="rwxr-xr-x"),
        f"test -L {root}/current )": (
            f"user={user} group={group} mode=lrwxrwxrwx atime=0 mtime=0 ctime=0 size=40 "
            f"'{root}/current' -> '{root}/builds/{wanted.id}'"
        ),
        "getconf NPROCESSORS_ONLN": "24",
    }
