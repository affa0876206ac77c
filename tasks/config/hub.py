"""Resolve models on the Hugging Face Hub (or a mirror of it), for the models lock. Controller side only.

`huggingface_hub` does what it does well: a wanted revision to its commit
(`model_info`), and each file's size and the sha256 the Hub records for it
(`get_paths_info`, the LFS pointer). The model's shape comes from its GGUF
header, read with HTTP Range requests on the file's resolve URL at that
commit: the first megabytes, never the file (tasks/config/gguf.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import httpx
from huggingface_hub import HfApi, hf_hub_url
from huggingface_hub import errors as hf_errors
from huggingface_hub.utils import build_hf_headers

from tasks.config import gguf
from tasks.config.model_lock import LockError, wanted_revision

DEFAULT_ENDPOINT = "https://huggingface.co"


def endpoint(policy: dict[str, Any]) -> str:
    """The operator's HF_ENDPOINT, else the group data's mirror, else the Hub."""
    return (os.environ.get("HF_ENDPOINT") or policy.get("hf_endpoint") or DEFAULT_ENDPOINT).rstrip("/")


class Hub:
    def __init__(self, url: str, token: str | None):
        self.url, self.token = url, token
        self.api = HfApi(endpoint=url, token=token or False)

    def commit(self, name: str, model: dict[str, Any]) -> str:
        """The commit the wanted revision names now; LockError naming the field when there is none."""
        repo, revision = model["repo"], wanted_revision(model)
        try:
            return self.api.model_info(repo, revision=revision).sha
        except (hf_errors.RevisionNotFoundError, hf_errors.RepositoryNotFoundError, hf_errors.HfHubHTTPError):
            pass
        # Mirrors answer 401 for a missing revision and a missing repository alike: ask about the repository alone.
        try:
            self.api.list_repo_refs(repo)
        except hf_errors.HfHubHTTPError as error:
            raise LockError(
                f"kitty_models.{name}.repo: {repo} was not found at {self.url} (or this token may not read it): "
                f"{_first_line(error)}"
            ) from None
        raise LockError(f"kitty_models.{name}.revision: {revision!r} is not a branch, tag or commit of {repo}")

    def files(self, name: str, model: dict[str, Any], commit: str, names: list[str]) -> dict[str, dict[str, Any]]:
        """Size and LFS sha256 of each file at `commit`; LockError naming every file that is not there."""
        try:
            infos = self.api.get_paths_info(model["repo"], names, revision=commit)
        except hf_errors.HfHubHTTPError as error:
            raise LockError(
                f"kitty_models.{name}: cannot list files of {model['repo']}: {_first_line(error)}"
            ) from None
        found = {info.path: info for info in infos if getattr(info, "size", None) is not None}
        missing = [n for n in names if n not in found]
        if missing:
            indexes = {file["name"]: i for i, file in enumerate(model["files"])}
            raise LockError(
                "\n".join(
                    f"kitty_models.{name}.files[{indexes.get(n, '?')}]: {n!r} is not in {model['repo']} "
                    f"at {wanted_revision(model)} ({commit[:12]})"
                    for n in missing
                )
            )
        result = {}
        for n in names:
            info = found[n]
            lfs = info.lfs
            sha256 = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
            result[n] = {"size": info.size, "sha256": sha256}
        return result

    def shape(self, repo: str, commit: str, filename: str) -> dict[str, Any]:
        """The GGUF header's shape of one file, read with ranged requests; {} for a file that is not a GGUF."""
        url = hf_hub_url(repo, filename, revision=commit, endpoint=self.url)
        with httpx.Client(follow_redirects=True, headers=build_hf_headers(token=self.token), timeout=60) as client:
            try:
                return gguf.read_shape(ranged_reader(client, url)).as_dict()
            except gguf.NotGGUF as error:
                raise LockError(f"{repo}/{filename} at {commit[:12]}: {error}") from None


def ranged_reader(client: httpx.Client, url: str) -> Callable[[int, int], bytes]:
    """fetch(start, end) -> bytes [start, end) of `url` (fewer at the end of the file).

    A server that ignores Range answers 200 with the whole file: only the bytes
    needed are read from that stream before it is closed.
    """

    def fetch(start: int, end: int) -> bytes:
        with client.stream("GET", url, headers={"Range": f"bytes={start}-{end - 1}"}) as response:
            if response.status_code == 416:
                return b""
            response.raise_for_status()
            skip = 0 if response.status_code == 206 else start
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) >= skip + (end - start):
                    break
            return bytes(data[skip : skip + (end - start)])

    return fetch


def lock_models(
    hub: Hub, models: dict[str, dict[str, Any]], current: dict[str, Any], upgrade: set[str], log=print
) -> dict[str, Any]:
    """The new lock: entries still right are kept as they are (no request); new, changed or upgraded ones resolved."""
    unknown = upgrade - set(models)
    if unknown:
        raise LockError(f"--upgrade: no model named {', '.join(sorted(unknown))} in kitty_models")
    result: dict[str, Any] = {}
    for name, model in models.items():
        names = [file["name"] for file in model["files"]]
        entry = current.get(name)
        keep = (
            entry is not None
            and name not in upgrade
            and entry.get("commit")
            and entry.get("repo") == model["repo"]
            and entry.get("revision") == wanted_revision(model)
        )
        if keep:
            commit = entry["commit"]
            # A file whose size the lock does not know (written by hand, "unknown") is asked again.
            known = {n: f for n, f in (entry.get("files") or {}).items() if f.get("size") is not None}
            files = {n: known[n] for n in names if n in known}
        else:
            commit = hub.commit(name, model)
            files = {}
        new = [n for n in names if n not in files]
        if new:
            for n, info in hub.files(name, model, commit, new).items():
                if n.endswith(".gguf"):
                    try:
                        info["gguf"] = hub.shape(model["repo"], commit, n)
                    except LockError as error:
                        # Recorded as unknown: the download still checks the magic and the sha256.
                        log(f"{name}: warning: no shape from {error}")
                        info["gguf"] = None
                files[n] = info
        result[name] = {
            "repo": model["repo"],
            "revision": wanted_revision(model),
            "commit": commit,
            "files": {n: files[n] for n in names},
        }
        if not keep or new:
            before = (entry or {}).get("commit")
            moved = f"{before[:12]} -> {commit[:12]}" if before and before != commit else commit[:12]
            log(f"{name}: {model['repo']}@{wanted_revision(model)} = {moved} ({len(new)} file(s) resolved)")
    return result


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
