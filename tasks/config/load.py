"""Host data to one validated KittyConfig: the `kitty_*` sections, the `--data` switches, the models lock."""

from __future__ import annotations

import runpy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tasks.config.schema import PLACEMENT_KEYS, SECTIONS, ConfigError, KittyConfig

# One-off switches for the command line: `pyinfra ... --data verify_models=full`.
SWITCHES = {
    "verify_models": ("model_policy", "verify"),
    "delete_unreferenced_models": ("model_policy", "delete_unreferenced"),
    "allow_unpinned_models": ("model_policy", "allow_unpinned"),
    "bench_restart": ("bench", "restart"),
    "bench_load_modes": ("bench", "load_modes"),
}


def load(data: Mapping[str, Any] | Any) -> KittyConfig:
    """Validate host data (a mapping, or pyinfra's `host.data`)."""
    get = data.get if isinstance(data, Mapping) else (lambda key, default=None: getattr(data, key, default))
    raw = {section: get(key) for key, section in SECTIONS.items() if get(key) is not None}
    for switch, (section, field) in SWITCHES.items():
        if get(switch) is not None:
            raw[section] = {**raw.get(section, {}), field: _switch_value(get(switch))}
    errors = [
        f"{key}: unknown setting (known: {', '.join(SECTIONS)})"
        for key in _kitty_keys(data)
        if key not in SECTIONS and key not in PLACEMENT_KEYS
    ]
    errors += _apply_models_lock(raw)
    try:
        config = KittyConfig.model_validate(raw)
    except ValidationError as exc:
        errors += [_describe(error) for error in exc.errors()]
        config = None
    if errors:
        raise ConfigError("invalid KITTY host data:\n" + "\n".join(f"  - {line}" for line in errors))
    return config


def _apply_models_lock(raw: dict[str, Any]) -> list[str]:
    """Fold the models lock into `raw["models"]` (tasks/config/model_lock.py); the disagreements, as errors."""
    from tasks.config import model_lock

    policy = raw.get("model_policy")
    lock_file = policy.get("lock_file") if isinstance(policy, Mapping) else None
    if not lock_file or not isinstance(raw.get("models"), Mapping):
        return []
    try:
        lock = model_lock.read(model_lock.path_of(lock_file))
    except model_lock.LockError as error:
        return [f"kitty_model_policy.lock_file: {error}"]
    raw["models"], errors = model_lock.apply(dict(raw["models"]), lock)
    return errors


TRUE, FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


def data_value(data: Mapping[str, Any] | Any, key: str) -> Any:
    """One `--data` value, from a mapping or pyinfra's `host.data`; None when not given."""
    return data.get(key) if hasattr(data, "get") else getattr(data, key, None)


def data_flag(data: Mapping[str, Any] | Any, key: str) -> bool:
    """A yes/no `--data` switch of an entry script (stop's emergency, remove's remove_*).

    Anything but a yes or a no is refused, naming the switch: a typo must not turn
    `emergency=ture` into a graceful stop, or `remove_models=ye` into models kept unsaid.
    """
    value = data_value(data, key)
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text not in TRUE and text not in FALSE:
        raise ConfigError(f"--data {key}={value!r}: say true or false")
    return text in TRUE


def data_choices(data: Mapping[str, Any] | Any, key: str, known: tuple[str, ...]) -> set[str] | None:
    """A comma-separated `--data` choice (stop's role); None when not given, refused when unknown."""
    value = data_value(data, key)
    if value is None or value == "":
        return None
    chosen = {part.strip() for part in str(value).split(",") if part.strip()}
    unknown = sorted(chosen - set(known))
    if unknown or not chosen:
        raise ConfigError(f"--data {key}={value!r}: say one or more of {', '.join(known)} (separated by commas)")
    return chosen


def _switch_value(value: Any) -> Any:
    # --data gives strings: "true"/"false" mean booleans here.
    return {"true": True, "false": False}.get(value, value) if isinstance(value, str) else value


def _kitty_keys(data: Mapping[str, Any] | Any) -> list[str]:
    keys = data.keys() if isinstance(data, Mapping) else data.dict().keys()
    return sorted(key for key in keys if key.startswith("kitty_"))


def _describe(error: dict) -> str:
    sections = {section: key for key, section in SECTIONS.items()}
    # pydantic marks a bad dict key with a "[key]" element after it.
    location = [str(part) for part in error["loc"] if part != "[key]"]
    if location and location[0] in sections:
        location[0] = sections[location[0]]
    message = error["msg"].removeprefix("Value error, ")
    if "[key]" in error["loc"]:
        message = f"bad name: {message}"
    if error["type"] == "extra_forbidden":
        message = "unknown setting (a typo?)"
    if not location:
        # Cross-field checks name their field themselves.
        return message
    return f"{'.'.join(location)}: {message}"


def read_group_data(*directories: str | Path) -> dict[str, Any]:
    """The `kitty_*` values of each directory's all.py, later directories winning, as pyinfra merges them.

    For controller-side tools (the host test suite) that need the same data as the deploy.
    """
    merged: dict[str, Any] = {}
    for directory in directories:
        path = Path(directory) / "all.py"
        if path.exists():
            values = runpy.run_path(str(path))
            merged.update({key: value for key, value in values.items() if key.startswith("kitty_")})
    return merged
