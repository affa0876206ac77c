#!/usr/bin/env python3
"""Lock the model files: resolve what kitty_models wants on the Hugging Face Hub and write the models lock.

    python lock_models.py                                  # group_data/ (the manual's models)
    python lock_models.py --group-data sandbox/group_data  # group_data/, then that folder on top
    python lock_models.py --upgrade hermes-summary         # move one model to its revision's newest commit
    python lock_models.py --check                          # exit 1 if the lock would change

For every model of kitty_models, its repository and wanted revision (branch,
tag or commit) become a commit sha; every file its size, the sha256 the Hub
records for it (LFS) and, for a GGUF, the model's shape read from its header
with ranged requests. The lock file is kitty_model_policy.lock_file; the
deploy reads it. A model already locked at its wanted revision is left
alone (no request): running this again with nothing changed changes nothing.

The Hub is HF_ENDPOINT, else kitty_model_policy.hf_endpoint, else
huggingface.co; the token is HF_TOKEN, as for the deploy.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_UPDATE_CHECK", "1")

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from tasks.config import Model, hub, model_lock, read_group_data  # noqa: E402  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group-data", action="append", default=[], help="a group data folder on top of group_data/")
    parser.add_argument("--upgrade", action="append", default=[], metavar="MODEL", help="re-resolve this model")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when the lock is not current")
    options = parser.parse_args(argv)

    data = read_group_data(ROOT / "group_data", *options.group_data)
    models = data.get("kitty_models") or {}
    policy = data.get("kitty_model_policy") or {}
    lock_file = policy.get("lock_file")
    if not lock_file:
        print("kitty_model_policy.lock_file is not set: there is no lock to write", file=sys.stderr)
        return 2
    errors = []
    for name, model in models.items():
        try:
            Model.model_validate(model)
        except ValueError as error:
            errors.append(f"kitty_models.{name}: {error}")
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 2

    path = model_lock.path_of(lock_file)
    try:
        current = model_lock.read(path)
        source = hub.Hub(hub.endpoint(policy), os.environ.get("HF_TOKEN"))
        locked = hub.lock_models(source, models, current, set(options.upgrade))
    except model_lock.LockError as error:
        print(f"lock_models: {error}", file=sys.stderr)
        return 1
    if options.check:
        same = model_lock.render(locked) == (path.read_text() if path.exists() else "")
        print(
            f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: {'current' if same else 'NOT current'}"
        )
        return 0 if same else 1
    changed = model_lock.write(path, locked)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"{shown}: {'written' if changed else 'unchanged'} ({len(locked)} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
