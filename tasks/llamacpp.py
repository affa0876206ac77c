"""llama.cpp built from the pinned ref, each build in its own prefix, `current` the one servers run.

    <opt_dir>/llama.cpp/src              one git clone, checked out at the ref being built
    <opt_dir>/llama.cpp/builds/<id>/     bin/llama-server + build.json, one per ref + options
    <opt_dir>/llama.cpp/current          -> builds/<id>: what the model servers execute

A build's id names its ref and a hash of everything that shapes the binary,
so a changed ref or option builds beside the old one and the old one stays
for rollback (the newest `keep_builds` are kept). A converged host plans no
git, cmake or install work at all.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.hardware import Cpus
from pyinfra.operations import files

from tasks.config import KittyConfig
from tasks.facts import LlamaCppBuilds
from tasks.operations import run_with_progress
from tasks.platform import Platform

BUILD_SCRIPT = str(Path(__file__).resolve().parent.parent / "templates" / "llama-build.sh")
BASE_CMAKE_ARGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    # One self-contained binary: a build's prefix needs nothing from its build tree.
    "-DBUILD_SHARED_LIBS=OFF",
    # The web UI would be downloaded at build time; KITTY is offline-first and uses the API.
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DGGML_CCACHE=ON",
]


@dataclass(frozen=True)
class Build:
    id: str
    ref: str
    backend: str
    cmake_args: list[str]


def root(cfg: KittyConfig) -> str:
    return f"{cfg.paths.opt_dir}/llama.cpp"


def binary(cfg: KittyConfig) -> str:
    """What the model servers run: always through `current`, so a new build needs no unit change."""
    return f"{root(cfg)}/current/bin/llama-server"


def wanted_build(cfg: KittyConfig, plat: Platform) -> Build:
    settings = cfg.llamacpp
    backend, backend_flags = plat.llamacpp_backend_flags(settings.backend)
    args = [*BASE_CMAKE_ARGS, *backend_flags]
    if settings.build_number is not None:
        args.append(f"-DLLAMA_BUILD_NUMBER={settings.build_number}")
    args += [f"-D{key}={value}" for key, value in sorted(settings.cmake_options.items())]
    identity = "\n".join([settings.ref, *args, *settings.targets])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    safe_ref = re.sub(r"[^A-Za-z0-9._-]", "_", settings.ref)[:40]
    return Build(id=f"{safe_ref}-{backend}-{digest}", ref=settings.ref, backend=backend, cmake_args=args)


@deploy("llama.cpp")
def build(cfg: KittyConfig, plat: Platform) -> list[OperationMeta]:
    """Make `current` the wanted build. Returns the operations whose change means servers must restart."""
    wanted = wanted_build(cfg, plat)
    base = root(cfg)
    installed = host.get_fact(LlamaCppBuilds, root=base) or {}
    good = [build_id for build_id, ok in installed.get("builds", []) if ok]

    files.directory(
        name="llama.cpp install folder",
        path=base,
        user=plat.user,
        recursive=False,
        _sudo=plat.sudo,
    )
    files.directory(name="logs folder", path=cfg.paths.logs_dir, user=plat.user, _sudo=plat.sudo)
    files.put(name="llama.cpp build script", src=BUILD_SCRIPT, dest=f"{base}/build.sh", mode="755")
    changes = []
    if wanted.id not in good:
        changes.append(
            run_with_progress(
                name=f"Build llama.cpp {wanted.ref} ({wanted.backend})",
                command=[
                    "bash",
                    f"{base}/build.sh",
                    base,
                    cfg.llamacpp.git_url,
                    cfg.paths.logs_dir,
                    str(host.get_fact(Cpus) or 2),
                    ",".join(cfg.llamacpp.targets),
                    wanted.id,
                    wanted.ref,
                    *wanted.cmake_args,
                ],
                env={**plat.env, "CCACHE_DIR": cfg.llamacpp.ccache_dir or f"{base}/ccache"},
            )
        )
    changes.append(
        files.link(
            name=f"Point current at {wanted.id}",
            path=f"{base}/current",
            target=f"{base}/builds/{wanted.id}",
        )
    )
    _prune(cfg, base, wanted.id, installed)
    return changes


def _prune(cfg: KittyConfig, base: str, wanted_id: str, installed: dict) -> None:
    """Keep the newest `keep_builds` builds (the wanted one and the one it replaces among them)."""
    newest_first = [build_id for build_id, _ in installed.get("builds", [])]
    keep = [wanted_id]
    if installed.get("current"):
        keep.append(installed["current"])
    for build_id in newest_first:
        if len(set(keep)) >= cfg.llamacpp.keep_builds:
            break
        keep.append(build_id)
    for build_id in newest_first:
        if build_id not in keep:
            files.directory(
                name=f"Remove old llama.cpp build {build_id}", path=f"{base}/builds/{build_id}", present=False
            )
