"""Scripted facts of a host whose llama.cpp is converged: the wanted build installed and current."""

from __future__ import annotations

import shlex
from pathlib import Path

from tasks import config
from tasks.host import layout
from tasks.inference import llamacpp
from tests.plan import launchd_facts
from tests.plan.harness import simulated_platform

BUILD_SCRIPT = Path(llamacpp.BUILD_SCRIPT).read_text()
# What the tags name upstream: the commits of the sandbox's mirror (sandbox/make-llama-mirror.sh).
UPSTREAM = {
    "b11434": "df1938a8801b302befed6c8854aca45fe547ed08",
    "b11434-kitty1": "cdc6aedfc04e84186b1c7f7b018644ec338d6d02",
}


def builds(
    root: str,
    current: str | None,
    installed: list[tuple[str, bool]],
    commits: dict[str, str] | None = None,
    unproven: tuple[str, ...] = (),
) -> dict:
    """The LlamaCppBuilds fact: `installed` newest first, as (build id, runs); `commits` from their build.json;
    every build that runs proved it computes (its smoke.json), but those in `unproven`."""
    commits = commits or {}
    lines = [f"current {current or ''}"]
    for bid, ok in installed:
        lines.append(f"build {bid} {'ok' if ok else 'broken'} {commits.get(bid, '')}".rstrip())
        if ok and bid not in unproven:
            lines.append(f"proven {bid}")
    folders = {}
    for build_id, _ in installed:
        folders.update(launchd_facts.directory(f"{root}/builds/{build_id}", user="admin", group="admin"))
    return {f'root={root}; [ -d "$root/builds" ]': lines, **folders}


# What llama-server b11434 lists in --help, as far as the servers' arguments go (flags.txt of a build).
FLAGS = [
    "--host", "--port", "-a", "--alias", "-m", "--model", "-mm", "--mmproj", "-c", "--ctx-size", "-t", "--threads",
    "-b", "--batch-size", "-ub", "--ubatch-size", "-np", "--parallel", "-ngl", "--gpu-layers", "--n-gpu-layers",
    "-fa", "--flash-attn", "--jinja", "--no-jinja", "--api-key-file", "-kvu", "--kv-unified", "--metrics",
    "--slots", "--no-slots", "-lm", "--load-mode", "-ctk", "--cache-type-k", "-ctv", "--cache-type-v",
    "-lv", "--verbosity", "--log-verbosity",
]  # fmt: skip


def flags(root: str, build_id: str, accepted: list[str] | None = FLAGS) -> dict:
    """The LlamaServerFlags fact of one build: its flags.txt; None: no binary to ask."""
    key = f"if [ -f {root}/builds/{build_id}/flags.txt ]"
    return {key: [] if accepted is None else ["kitty-flags", *accepted]}


def upstream(git_url: str, ref: str, commit: str | None, *, annotated: bool = False) -> dict:
    """The GitRemoteRef fact as `git ls-remote` answers it; commit None: the git server cannot be reached."""
    key = f"git_url={shlex.quote(git_url)}; ref={shlex.quote(ref)};"
    if commit is None:
        return {key: ["unreachable exit 128", f"fatal: unable to access '{git_url}/': Could not resolve host"]}
    if annotated:
        return {key: ["reachable", f"{'1' * 40}\trefs/tags/{ref}", f"{commit}\trefs/tags/{ref}^{{}}"]}
    return {key: ["reachable", f"{commit}\trefs/tags/{ref}"]}


def current_link(root: str, build_id: str, *, user: str, group: str) -> dict:
    """The `current` symlink pointing at builds/<build_id>, as pyinfra's Link fact reads it."""
    return {
        f"test -L {root}/current )": (
            f"user={user} group={group} mode=lrwxrwxrwx atime=0 mtime=0 ctime=0 size=40 "
            f"'{root}/current' -> '{root}/builds/{build_id}'"
        )
    }


def converged(data: dict, *, os: str, user: str, arch: str = "x86_64") -> dict:
    cfg = config.load(data)
    plat = simulated_platform(os, user, arch)
    commit = UPSTREAM.get(cfg.llamacpp.ref)
    wanted = llamacpp.wanted_build(cfg, plat, commit)
    root = layout.llamacpp_dir(cfg)
    group = "staff" if os == "macos" else user
    answers = {}
    for ref, sha in UPSTREAM.items():
        answers.update(upstream(cfg.llamacpp.git_url, ref, sha))
    return {
        **answers,
        **builds(root, wanted.id, [(wanted.id, True)], {wanted.id: commit} if commit else {}),
        **flags(root, wanted.id),
        **launchd_facts.directory(root, user=user, group=group),
        **launchd_facts.directory(cfg.paths.logs_dir, user=user, group=group),
        **launchd_facts.file(f"{root}/build.sh", BUILD_SCRIPT, user=user, group=group, mode="rwxr-xr-x"),
        **current_link(root, wanted.id, user=user, group=group),
        "getconf NPROCESSORS_ONLN": "24",
    }
