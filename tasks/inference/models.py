"""GGUF model files at locked commits: downloaded (resumably), checked, sha256-verified once.

What to fetch comes from kitty_models and the models lock (lock_models.py):
the commit, each file's size and sha256, as the Hub records them. A file is
fetched from its resolve URL at that commit with curl into a staging file,
continued with HTTP Range requests after an interruption, checked (GGUF
magic, size, sha256) and only then renamed into place (templates/model-fetch.sh).

A file is hashed once, after download (or when found without a stamp); its
hash, size and mtime go into a stamp beside it (`<dir>/.kitty/<file>.stamp`).
Later converges trust the stamp: they compare stat data with it only, so a
140 GB model is never re-read unless asked. `--data verify_models=full`
re-hashes every file and compares with the pinned sha256, or, where none is
pinned, with the one its stamp recorded when it was first verified: a
mismatch is reported and the file fetched again, never re-stamped as good.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import quote

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from tasks.config import KittyConfig, Model, ModelFile
from tasks.engine import templates
from tasks.engine.operations import run_with_progress, secret_file
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.inference.model_facts import FreeSpace, ModelDirFiles, ModelFileStates

FETCH_SCRIPT = str(templates.path("model-fetch.sh"))
GB = 10**9
HUB = "https://huggingface.co"


@dataclass(frozen=True)
class Wanted:
    model_name: str
    model: Model
    file: ModelFile

    @property
    def rel(self) -> str:
        return f"{self.model.dir}/{self.file.name}"

    @property
    def expected_bytes(self) -> int:
        return self.file.size or int((self.file.approx_gb or 0) * GB)

    @property
    def revision(self) -> str:
        """What is downloaded: the locked commit, or (unpinned, when allowed) the wanted revision."""
        return self.model.commit or self.model.revision or "main"


def wanted_files(cfg: KittyConfig) -> list[Wanted]:
    """Every file an enabled server needs (weights, shards, projector), and prefetched models' files.

    A disabled server's files are not fetched: the F16 model alone is 141 GB.
    """
    names = [name for name, model in cfg.models.items() if model.prefetch]
    for server in cfg.enabled_servers().values():
        names += [server.model] + ([server.mmproj] if server.mmproj else [])
    seen = dict.fromkeys(names)
    return [Wanted(name, cfg.models[name], file) for name in seen for file in cfg.models[name].files]


def is_verified(wanted: Wanted, state: dict | None, full: bool) -> bool:
    """Stamped at this size and mtime, with the pinned hash (and, in full mode, still hashing to it)."""
    if not state or not state["exists"] or not state["stamp"]:
        return False
    stamp = state["stamp"]
    if (stamp["size"], stamp["mtime"]) != (state["size"], state["mtime"]):
        return False
    if wanted.file.sha256 and stamp["sha256"] != wanted.file.sha256:
        return False
    if wanted.file.size and state["size"] != wanted.file.size:
        return False
    return not full or state["sha256"] == expected_sha256(wanted, state)


def expected_sha256(wanted: Wanted, state: dict | None) -> str | None:
    """The hash a file must have: the pinned one, else the one its stamp recorded when first verified.

    Never the file's own fresh hash: a corrupted file must not vouch for itself.
    """
    if wanted.file.sha256:
        return wanted.file.sha256
    stamp = (state or {}).get("stamp")
    return stamp["sha256"] if stamp else None


def _states(cfg: KittyConfig) -> tuple[list[Wanted], dict, list[Wanted]]:
    """Every wanted file, their states on the host, and those this converge fetches."""
    wanted = wanted_files(cfg)
    full = cfg.model_policy.verify == "full"
    files_ = [w.rel for w in wanted]
    states = host.get_fact(ModelFileStates, models_dir=cfg.paths.models_dir, files=files_, full=full) or {}
    return wanted, states, [w for w in wanted if not is_verified(w, states.get(w.rel), full)]


def to_fetch(cfg: KittyConfig) -> set[str]:
    """Paths (relative to models_dir) of the files this converge downloads or replaces."""
    return {w.rel for w in _states(cfg)[2]}


@deploy("Model files")
def download(cfg: KittyConfig, plat: Platform) -> dict[str, list[OperationMeta]]:
    """Make every wanted file present and verified. Returns, per model, the operations that replaced a file."""
    models_dir = cfg.paths.models_dir
    wanted, states, todo = _states(cfg)

    _report_unreferenced(cfg, wanted)
    _report_verification(cfg, wanted, states, todo)
    if not todo:
        return {}

    _refuse_unpinned(cfg, todo, states)
    _preflight_disk(cfg, todo, states)
    files.directory(name="models folder", path=models_dir, user=plat.user, _sudo=plat.sudo)
    # hf's cache and token live here (HF_HOME); on Linux the CLI's venv too.
    files.directory(name="Hugging Face folder", path=layout.hf_dir(cfg), user=plat.user, _sudo=plat.sudo)
    files.put(name="model fetch script", src=FETCH_SCRIPT, dest=f"{models_dir}/.kitty-fetch.sh", mode="755")
    env = _hf_env(cfg)
    token = os.environ.get("HF_TOKEN")
    if token:
        # From the operator's environment to 0600 files on the host: never in
        # a command line, an environment export or pyinfra's output. hf reads
        # the token, curl the whole header.
        env["HF_TOKEN_PATH"] = f"{layout.hf_dir(cfg)}/token"
        secret_file(name="Hugging Face token", content=token, dest=env["HF_TOKEN_PATH"], user=plat.user)
        if cfg.model_policy.downloader == "curl":
            env["KITTY_AUTH_HEADER_FILE"] = f"{layout.hf_dir(cfg)}/auth-header"
            secret_file(
                name="Hugging Face token header",
                content=f"Authorization: Bearer {token}\n",
                dest=env["KITTY_AUTH_HEADER_FILE"],
                user=plat.user,
            )
    changed: dict[str, list[OperationMeta]] = {}
    for item in todo:
        expected = expected_sha256(item, states.get(item.rel))
        command = [
            "sh",
            f"{models_dir}/.kitty-fetch.sh",
            models_dir,
            item.model.dir,
            item.file.name,
            expected or "-",
            str(item.file.size) if item.file.size else "-",
        ]
        if cfg.model_policy.downloader == "curl":
            command += ["curl", resolve_url(cfg, item)]
        else:
            command += ["hf", plat.hf_binary(cfg.paths.opt_dir), item.model.repo, item.revision]
        changed.setdefault(item.model_name, []).append(
            run_with_progress(name=f"Fetch {item.rel}", command=command, env=env)
        )
    return changed


def resolve_url(cfg: KittyConfig, item: Wanted) -> str:
    """The file's resolve URL at its commit, on the configured Hub or mirror (as hf_hub_url builds it)."""
    endpoint = (cfg.model_policy.hf_endpoint or HUB).rstrip("/")
    return f"{endpoint}/{item.model.repo}/resolve/{quote(item.revision, safe='')}/{quote(item.file.name)}"


def _report_verification(cfg: KittyConfig, wanted: list[Wanted], states: dict, todo: list[Wanted]) -> None:
    """Say what this converge trusted, and each full-verify mismatch, before anything is fetched."""
    if cfg.model_policy.verify == "full":
        for item in todo:
            state = states.get(item.rel) or {}
            expected = expected_sha256(item, state)
            if state.get("sha256") and expected and state["sha256"] != expected:
                source = "pinned" if item.file.sha256 else "first verified"
                logger.warning(
                    f"{host.name}: {cfg.paths.models_dir}/{item.rel} is CORRUPT: sha256 {state['sha256']} "
                    f"is not the {source} {expected}; it will be fetched again"
                )
        return
    trusted = len(wanted) - len(todo)
    if trusted:
        logger.info(
            f"{host.name}: trusting the stamps (size and mtime) of {trusted} model file(s); "
            "--data verify_models=full re-hashes them"
        )


def _refuse_unpinned(cfg: KittyConfig, todo: list[Wanted], states: dict) -> None:
    """Refuse, before any download, what is not pinned by commit AND content.

    A commit says where the file comes from, not what it holds: without a sha256 (from the lock,
    or the stamp of a copy verified before) any bytes that start with GGUF would be accepted and
    stamped good. The lock is the reviewed source of the hashes (lock_models.py writes them from
    the Hub's LFS records); a hash read from the Hub at download time would come from the very
    server whose bytes it is meant to check.
    """
    unpinned = sorted({w.model_name for w in todo if not w.model.pinned})
    if unpinned and not cfg.model_policy.allow_unpinned:
        raise DeployError(
            f"{host.name}: refusing to download models whose revision is not pinned: {', '.join(unpinned)}.\n"
            "  Lock them (`python lock_models.py`, with kitty_model_policy.lock_file set), pin a commit sha "
            "in kitty_models.<name>.revision, or accept what the wanted revision holds today with "
            "--data allow_unpinned_models=true"
        )
    unhashed = [w for w in todo if w.model.pinned and not expected_sha256(w, states.get(w.rel))]
    if unhashed and not cfg.model_policy.allow_unpinned:
        raise DeployError(
            f"{host.name}: refusing to download model files with no sha256 to check them against: "
            f"{', '.join(w.rel for w in unhashed)}.\n"
            "  Their commit is pinned, their content is not: any file starting with GGUF would be accepted. "
            "Lock their hashes (`python lock_models.py` with Hub access looks them up at the locked commit; "
            "review the diff), give kitty_models.<name>.files[].sha256, or accept unchecked content with "
            "--data allow_unpinned_models=true"
        )


def _preflight_disk(cfg: KittyConfig, todo: list[Wanted], states: dict) -> None:
    """Refuse, before any download starts, when what is still to fetch does not fit on the models volume.

    A re-download of a file that exists needs room for the new copy beside the
    old one; the bytes of an interrupted download already in staging are not
    fetched again (`curl -C -`) and need no more room.
    """
    rows = []
    for w in todo:
        partial = (states.get(w.rel) or {}).get("partial", 0) if cfg.model_policy.downloader == "curl" else 0
        rows.append((w, min(partial, w.expected_bytes), w.expected_bytes - min(partial, w.expected_bytes)))
    needed = sum(left for _, _, left in rows)
    partial = sum(have for _, have, _ in rows)
    free = host.get_fact(FreeSpace, path=cfg.paths.models_dir)
    if free is not None and needed > free:
        lines = [
            f"    {w.rel:<70} {left / GB:8.1f} GB" + (f" (+{have / GB:.1f} GB already downloaded)" if have else "")
            for w, have, left in rows
        ]
        already = f" ({partial / GB:.1f} GB already downloaded)" if partial else ""
        raise DeployError(
            f"{host.name}: not enough disk for the model files: {needed / GB:.1f} GB needed{already}, "
            f"{free / GB:.1f} GB free on the volume of {cfg.paths.models_dir}: "
            f"{(needed - free) / GB:.1f} GB missing\n" + "\n".join(lines)
        )


def _report_unreferenced(cfg: KittyConfig, wanted: list[Wanted]) -> None:
    referenced = {w.rel for w in wanted}
    # Files of defined but disabled servers are kept: enabling one must not mean a new download.
    defined = {f"{m.dir}/{f.name}" for m in cfg.models.values() for f in m.files}
    present = host.get_fact(ModelDirFiles, models_dir=cfg.paths.models_dir) or []
    stray = [rel for rel in present if rel not in referenced and rel not in defined]
    for rel in stray:
        if cfg.model_policy.delete_unreferenced:
            files.file(
                name=f"Remove unreferenced model file {rel}", path=f"{cfg.paths.models_dir}/{rel}", present=False
            )
        else:
            logger.warning(
                f"{host.name}: {cfg.paths.models_dir}/{rel} is not used by any model "
                "(remove it with --data delete_unreferenced_models=true)"
            )


def _hf_env(cfg: KittyConfig) -> dict[str, str]:
    env = {
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HOME": f"{layout.hf_dir(cfg)}/home",
        "NO_COLOR": "1",
    }
    if cfg.model_policy.hf_endpoint:
        env["HF_ENDPOINT"] = cfg.model_policy.hf_endpoint
    if cfg.model_policy.offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env
