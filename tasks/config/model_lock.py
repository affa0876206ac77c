"""The models lock file: what the machine resolved for what a human chose.

`kitty_models` in group data says which repository, which files and which
revision (a branch, a tag or a commit) a human wants. The lock
(`kitty_model_policy.lock_file`, JSON, written by `lock_models.py`) says what
that resolved to on the Hub: the commit, and per file its size, the sha256
the Hub records for it (LFS) and the model's shape read from its GGUF header.
The deploy reads both: `apply()` folds the lock into the host data before it
is validated, so every later step sees one config.

One entry per file, keys in a fixed order: a re-lock shows as a reviewable diff.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VERSION = 1
HEADER = (
    "Written by lock_models.py from the Hugging Face Hub; review changes like code. "
    "kitty_models (group data) says what is wanted, this file what it resolved to."
)
DEFAULT_REVISION = "main"


class LockError(ValueError):
    """The lock file cannot be read, or it disagrees with kitty_models."""


def path_of(lock_file: str) -> Path:
    """A lock path from group data: relative paths are relative to the project, as group_data/ is."""
    path = Path(lock_file)
    return path if path.is_absolute() else ROOT / path


def read(path: Path) -> dict[str, Any]:
    """The lock's models ({} when there is no lock file yet)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise LockError(f"{path}: cannot read the models lock: {error}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("models"), dict):
        raise LockError(f"{path}: not a version {VERSION} models lock (run lock_models.py again)")
    return data["models"]


def render(models: dict[str, Any]) -> str:
    return json.dumps({"_comment": HEADER, "version": VERSION, "models": models}, indent=2) + "\n"


def write(path: Path, models: dict[str, Any]) -> bool:
    """Write the lock; False when it already says exactly this (the file is left untouched)."""
    text = render(models)
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def wanted_revision(model: dict[str, Any]) -> str:
    return model.get("revision") or DEFAULT_REVISION


def matches(model: dict[str, Any], entry: dict[str, Any]) -> bool:
    """The lock entry was resolved for this repository and this wanted revision."""
    return entry.get("repo") == model.get("repo") and entry.get("revision") == wanted_revision(model)


def apply(models: dict[str, Any], lock: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`kitty_models` with the lock's commit, sizes, sha256 and shapes filled in; and the disagreements.

    A model the lock does not list is left as it is (pinned inline, or not at
    all). A human-given size or sha256 must agree with the lock: two sources
    of truth that differ are an error, not a silent choice.
    """
    merged: dict[str, Any] = {}
    errors: list[str] = []
    for name, model in models.items():
        entry = lock.get(name)
        if not isinstance(model, dict) or entry is None:
            merged[name] = model
            continue
        where = f"kitty_models.{name}"
        if not matches(model, entry):
            errors.append(
                f"{where}: the lock resolved {entry.get('repo')}@{entry.get('revision')}, not "
                f"{model.get('repo')}@{wanted_revision(model)}: run `python lock_models.py`"
            )
            merged[name] = model
            continue
        model = dict(model)
        if entry.get("commit"):
            if model.get("commit") not in (None, entry["commit"]):
                errors.append(f"{where}.commit: {model['commit']} differs from the lock's {entry['commit']}")
            model["commit"] = entry["commit"]
        files = []
        for index, file in enumerate(model.get("files") or []):
            if not isinstance(file, dict):
                files.append(file)
                continue
            locked = (entry.get("files") or {}).get(file.get("name"))
            if locked is None and not entry.get("commit"):
                # The lock knows nothing of this model yet (an entry marked unknown): nothing to disagree with.
                files.append(file)
                continue
            if locked is None:
                errors.append(
                    f"{where}.files[{index}]: {file.get('name')!r} is not in the lock: run `python lock_models.py`"
                )
                files.append(file)
                continue
            file = dict(file)
            for key in ("size", "sha256"):
                if locked.get(key) is None:
                    continue
                if file.get(key) not in (None, locked[key]):
                    errors.append(f"{where}.files[{index}].{key}: {file[key]} differs from the lock's {locked[key]}")
                file[key] = locked[key]
            if locked.get("gguf"):
                file["shape"] = locked["gguf"]
            files.append(file)
        model["files"] = files
        merged[name] = model
    return merged, errors
