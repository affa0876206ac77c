"""llama.cpp built from the pinned ref, each build in its own prefix, `current` the one servers run.

    <opt_dir>/llama.cpp/src              one git clone, checked out at the commit being built
    <opt_dir>/llama.cpp/builds/<id>/     bin/llama-server + build.json + flags.txt, one per commit + options
    <opt_dir>/llama.cpp/current          -> builds/<id>: what the model servers execute

A build's id names its ref, a hash of everything that shapes the binary and
the commit the ref resolves to upstream, so a changed ref or option, or a tag
re-pointed upstream, builds beside the old one and the old one stays for
rollback (the newest `keep_builds` are kept). A converged host plans no git
fetch, cmake or install work at all.

Every enabled server's arguments are checked against the flags of the build
it will run on (flags.txt, from that llama-server's own --help) before
anything on the host changes: at plan time when the build exists, and right
after a new build, before `current` moves to it. An unknown flag is a
configuration error naming the server's field, the flag and the build.

A new build proves itself before `current` moves to it, and so before any
server runs on it: its llama-server serves one completion from a tiny model
made by the deploy (tasks/inference/smoke_model.py, templates/llama-smoke.sh), with the
GPU layers the servers ask for. A build that crashes, hangs, answers nothing or
computes on the CPU when it has a GPU backend is refused with the signal, its
log's tail and the likely cause; it stays in builds/ unproven (the next
converge proves it again, without compiling) and never becomes `current`.

Noticing a re-pointed tag costs one read-only `git ls-remote` per converge (a
single round trip to the git server, no objects fetched); a ref that is a
full commit sha needs none. When the git server cannot be reached (offline,
or a fresh Mac without git yet) the converge keeps the installed build of the
same ref and options, with a warning, and a fresh host builds what the ref
names when the build runs.
"""

from __future__ import annotations

import hashlib
import io
import re
import shlex
from dataclasses import dataclass, replace

from pyinfra import host, logger
from pyinfra.api import deploy, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.hardware import Cpus
from pyinfra.operations import files

from tasks.config import ConfigError, KittyConfig, flags
from tasks.engine import templates
from tasks.engine.operations import run_with_progress
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.inference import server_args, smoke_model
from tasks.inference.llamacpp_facts import GitRemoteRef, LlamaCppBuilds, LlamaServerFlags

BUILD_SCRIPT = str(templates.path("llama-build.sh"))
SMOKE_SCRIPT = str(templates.path("llama-smoke.sh"))
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
# llama.cpp RPC (tasks/inference/rpc_workers.py): the RPC backend and its server, only on hosts that
# run a worker or a server with workers, so every other host keeps its build id.
RPC_CMAKE_ARG = "-DGGML_RPC=ON"
# tools/rpc's target at b11434 (older trees call it rpc-server).
RPC_SERVER_TARGET = "ggml-rpc-server"
FULL_SHA = re.compile(r"[0-9a-f]{40}")
# An abbreviated commit sha cannot move either, and ls-remote cannot look it up.
SHORT_SHA = re.compile(r"[0-9a-f]{7,39}")


@dataclass(frozen=True)
class Build:
    id: str
    ref: str
    backend: str
    cmake_args: list[str]
    targets: tuple[str, ...] = ("llama-server",)
    # What `ref` resolved to upstream when the deploy looked; None: not known,
    # the build script resolves the ref itself.
    commit: str | None = None


def binary(cfg: KittyConfig) -> str:
    """What the model servers run: always through `current`, so a new build needs no unit change."""
    return f"{layout.llamacpp_current(cfg)}/bin/llama-server"


def needs_rpc(cfg: KittyConfig) -> bool:
    """This host runs an rpc-server, or a server (placed here) that uses some."""
    return cfg.rpc_worker is not None or any(srv.rpc_workers for srv in cfg.enabled_servers().values())


def wanted_build(cfg: KittyConfig, plat: Platform, commit: str | None = None) -> Build:
    """The build for these settings at `commit` (no host needed).

    Without a commit (not known, or an abbreviated sha) the id names the ref
    and options only, as ids did before the commit was part of them.
    """
    settings = cfg.llamacpp
    backend, backend_flags = plat.llamacpp_backend_flags(settings.backend, settings.cpu)
    args = [*BASE_CMAKE_ARGS, *backend_flags]
    if settings.build_number is not None:
        args.append(f"-DLLAMA_BUILD_NUMBER={settings.build_number}")
    args += [f"-D{key}={value}" for key, value in sorted(settings.cmake_options.items())]
    targets = list(settings.targets)
    if needs_rpc(cfg):
        args.append(RPC_CMAKE_ARG)
        targets += [RPC_SERVER_TARGET] if RPC_SERVER_TARGET not in targets else []
    identity = "\n".join([settings.ref, *args, *targets])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    safe_ref = re.sub(r"[^A-Za-z0-9._-]", "_", settings.ref)[:40]
    build_id = f"{safe_ref}-{backend}-{digest}"
    if FULL_SHA.fullmatch(settings.ref):
        commit = settings.ref  # already in the id
    elif commit:
        build_id += f"-{commit[:12]}"
    return Build(id=build_id, ref=settings.ref, backend=backend, cmake_args=args, targets=tuple(targets), commit=commit)


def resolved_build(cfg: KittyConfig, plat: Platform) -> Build:
    """The build `current` must point at on this host: at the commit the ref names upstream now."""
    ref = cfg.llamacpp.ref
    if FULL_SHA.fullmatch(ref) or SHORT_SHA.fullmatch(ref):
        return wanted_build(cfg, plat)
    upstream = host.get_fact(GitRemoteRef, git_url=cfg.llamacpp.git_url, ref=ref, _env=plat.env) or {}
    installed = host.get_fact(LlamaCppBuilds, root=layout.llamacpp_dir(cfg)) or {}
    good = [build_id for build_id, ok in installed.get("builds", []) if ok]
    unpinned = wanted_build(cfg, plat)
    commit = upstream.get("commit")
    if commit:
        wanted = wanted_build(cfg, plat, commit)
        # A build made before commits were part of ids, from this very commit, is the same build.
        if wanted.id not in good and unpinned.id in good and installed.get("commits", {}).get(unpinned.id) == commit:
            return replace(unpinned, commit=commit)
        return wanted
    if upstream.get("reachable"):
        raise DeployError(
            f"{host.name}: kitty_llamacpp.ref: {ref!r} is neither a tag nor a branch of {cfg.llamacpp.git_url}"
        )
    # The git server cannot be asked: keep what was built of this ref with these options.
    same = [build_id for build_id in good if build_id == unpinned.id or build_id.startswith(unpinned.id + "-")]
    current = installed.get("current")
    if same:
        kept = current if current in same else same[0]
        logger.warning(
            f"{host.name}: cannot ask {cfg.llamacpp.git_url} what llama.cpp {ref} names now "
            f"({upstream.get('error') or 'no answer'}); keeping build {kept}"
        )
        return replace(unpinned, id=kept, commit=installed.get("commits", {}).get(kept))
    return unpinned


@deploy("llama.cpp")
def build(cfg: KittyConfig, plat: Platform) -> list[OperationMeta]:
    """Make `current` the wanted build. Returns the operations whose change means servers must restart."""
    wanted = resolved_build(cfg, plat)
    base = layout.llamacpp_dir(cfg)
    installed = host.get_fact(LlamaCppBuilds, root=base) or {}
    good = [build_id for build_id, ok in installed.get("builds", []) if ok]
    _warn_if_moved(cfg, plat, wanted, installed)

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
                    "sh",
                    f"{base}/build.sh",
                    base,
                    cfg.llamacpp.git_url,
                    cfg.paths.logs_dir,
                    str(host.get_fact(Cpus) or 2),
                    ",".join(wanted.targets),
                    wanted.id,
                    wanted.ref,
                    wanted.commit or "-",
                    *wanted.cmake_args,
                ],
                env={**plat.env, "CCACHE_DIR": cfg.llamacpp.ccache_dir or f"{base}/ccache"},
            )
        )
    build_dir = layout.llamacpp_build(cfg, wanted.id)
    if wanted.id in good:
        _refuse_unknown_flags(cfg, wanted, host.get_fact(LlamaServerFlags, build_dir=build_dir))
    else:
        flags_accepted(
            name=f"Check the servers' flags against llama-server {wanted.ref}",
            build_dir=build_dir,
            build_name=wanted.ref,
            wanted=server_flags(cfg),
        )
    if wanted.id not in installed.get("proven", ()):
        _prove(cfg, plat, wanted, base)
    changes.append(
        files.link(
            name=f"Point current at {wanted.id}",
            path=layout.llamacpp_current(cfg),
            target=layout.llamacpp_build(cfg, wanted.id),
        )
    )
    _prune(cfg, base, wanted.id, installed)
    return changes


def _prove(cfg: KittyConfig, plat: Platform, wanted: Build, base: str) -> None:
    """The build serves one completion from the tiny model before `current` may move to it."""
    files.directory(name="llama.cpp smoke test folder", path=f"{base}/smoke", user=plat.user, _sudo=plat.sudo)
    model = f"{base}/smoke/{smoke_model.NAME}"
    # Made on the controller only when a build is to be proven: a converged host never pays for it.
    files.put(name="Tiny model for proving builds", src=io.BytesIO(smoke_model.content()), dest=model, mode="644")
    files.put(name="llama.cpp smoke test script", src=SMOKE_SCRIPT, dest=f"{base}/smoke.sh", mode="755")
    gpu_layers, env = smoke_gpu_request(cfg, wanted.backend)
    run_with_progress(
        name=f"Prove llama.cpp {wanted.ref} computes on this host",
        command=[
            "sh",
            f"{base}/smoke.sh",
            layout.llamacpp_build(cfg, wanted.id),
            model,
            layout.llamacpp_smoke_log(cfg, wanted.id),
            str(gpu_layers),
            wanted.backend,
            plat.llamacpp_cpu(cfg.llamacpp.cpu),
            str(cfg.llamacpp.smoke_timeout),
            *[f"{name}={value}" for name, value in sorted(env.items())],
        ],
    )


def smoke_gpu_request(cfg: KittyConfig, backend: str) -> tuple[int, dict[str, str]]:
    """The GPU layers the smoke test asks for, and the environment it runs with: those of the
    server here that asks for the most (on a host with only an RPC worker: all, on a GPU build)."""
    servers = sorted(cfg.enabled_servers().values(), key=lambda srv: srv.n_gpu_layers, reverse=True)
    if servers:
        return servers[0].n_gpu_layers, dict(servers[0].env)
    return (0 if backend == "cpu" else 999), {}


def server_flags(cfg: KittyConfig) -> list[tuple[str, str]]:
    """(`kitty_servers.<name>.<field>`, flag) for every flag of every enabled server's command line."""
    found = []
    for name, srv in cfg.enabled_servers().items():
        argv = server_args.arguments(cfg, name, srv, binary(cfg), cfg.paths.models_dir)[1:]
        extra_from = len(argv) - len(srv.extra_args)
        for i, arg in enumerate(argv):
            # A flag, not a value: `-1` or a path is a value.
            if not re.match(r"--?[A-Za-z]", arg):
                continue
            flag = flags.flag_name(arg)
            field = "extra_args" if i >= extra_from else flags.MANAGED_FLAGS.get(flag, "extra_args")
            found.append((f"kitty_servers.{name}.{field}", flag))
    return found


def unknown_flags(cfg: KittyConfig, flags: set[str], build_name: str) -> list[str]:
    """One line per flag the build's llama-server does not accept, naming the field, the flag and the build."""
    return [
        f"{field}: {flag} is not a flag of llama-server {build_name}"
        for field, flag in server_flags(cfg)
        if flag not in flags
    ]


def _refuse_unknown_flags(cfg: KittyConfig, wanted: Build, flags: set[str] | None) -> None:
    if flags is None:
        logger.warning(
            f"{host.name}: cannot read the flags of llama-server {wanted.id}: the servers' arguments are not checked"
        )
        return
    errors = unknown_flags(cfg, flags, wanted.ref)
    if errors:
        raise ConfigError("invalid KITTY host data:\n" + "\n".join(f"  - {line}" for line in errors))


@operation()
def flags_accepted(build_dir: str, build_name: str, wanted: list[tuple[str, str]]):
    """Fail, naming each field and flag, when the new build's llama-server does not accept a server's flag.

    + build_dir: the new build (its flags.txt, written by the build script)
    + build_name: how people name it (the ref)
    + wanted: (field, flag) of every enabled server
    """
    f = shlex.quote(f"{build_dir}/flags.txt")
    checks = [
        f"grep -qxF -e {shlex.quote(flag)} {f} || "
        f"{{ echo {shlex.quote(f'{field}: {flag} is not a flag of llama-server {build_name}')} >&2; bad=1; }}"
        for field, flag in wanted
    ]
    unchecked = shlex.quote(f"no flags recorded for llama-server {build_name}: not checked")
    yield (f"if [ ! -s {f} ]; then echo {unchecked} >&2; exit 0; fi; bad=0; {'; '.join(checks) or ':'}; [ $bad = 0 ]")


def _warn_if_moved(cfg: KittyConfig, plat: Platform, wanted: Build, installed: dict) -> None:
    """Say loudly when the ref `current` was built from now names another commit upstream."""
    current = installed.get("current")
    built_from = installed.get("commits", {}).get(current or "")
    same_settings = wanted_build(cfg, plat).id
    if not (current and built_from and wanted.commit) or built_from == wanted.commit:
        return
    if current == same_settings or current.startswith(same_settings + "-"):
        logger.warning(
            f"{host.name}: llama.cpp {wanted.ref} moved upstream: built from {built_from[:12]}, "
            f"now {wanted.commit[:12]}; building {wanted.id} beside {current}"
        )


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
                name=f"Remove old llama.cpp build {build_id}", path=layout.llamacpp_build(cfg, build_id), present=False
            )
