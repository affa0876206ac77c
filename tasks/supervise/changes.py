"""Why a program's definition changed, in its own words: `ctx_size 2048 → 4096`, not "the unit differs".

The installed plist or unit (world-readable, no secrets: tasks/config/schema.py keeps
keys out of them) is read back into its arguments, environment names and
other settings, and compared with the one this converge renders. A flag that
a ModelServer field sets is named by that field (tasks/config/flags.py);
any other flag by itself.
"""

from __future__ import annotations

import plistlib
import re

from tasks.config.flags import MANAGED_FLAGS, flag_name

# A systemd argument as program.service.j2 quotes it: "..." with \\ and \" escaped.
QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def parse_plist(text: str) -> dict:
    """{"argv": [...], "env": {...}, "settings": {key: value}} of a LaunchDaemon plist."""
    try:
        data = plistlib.loads(text.encode())
    except Exception:  # noqa: BLE001 - a plist edited by hand: nothing to compare
        return {"argv": [], "env": {}, "settings": {}}
    settings = {k: v for k, v in data.items() if k not in ("ProgramArguments", "EnvironmentVariables")}
    return {
        "argv": list(data.get("ProgramArguments") or []),
        "env": dict(data.get("EnvironmentVariables") or {}),
        "settings": settings,
    }


def parse_unit(text: str) -> dict:
    """{"argv": [...], "env": {...}, "settings": {key: value}} of a unit program.service.j2 wrote."""
    argv, env, settings = [], {}, {}
    for line in text.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if key == "ExecStart":
            argv = [_unquote(arg) for arg in QUOTED.findall(value)]
        elif key == "Environment":
            for item in QUOTED.findall(value):
                name, _, val = _unquote(item).partition("=")
                env[name] = val
        else:
            settings[key] = value
    return {"argv": argv, "env": env, "settings": settings}


def _unquote(arg: str) -> str:
    return re.sub(r"\\(.)", r"\1", arg).replace("%%", "%").replace("$$", "$")


def describe(old: dict, new: dict) -> list[str]:
    """What differs between two parsed definitions, one phrase each, arguments first."""
    found = argv_changes(old["argv"], new["argv"])
    for name in sorted(set(old["env"]) | set(new["env"])):
        if old["env"].get(name) != new["env"].get(name):
            # Names only: a value is the operator's business and may be long.
            found.append(f"environment {name} {'added' if name not in old['env'] else 'changed'}")
    was, now = old["settings"], new["settings"]
    changed = sorted(key for key in set(was) | set(now) if was.get(key) != now.get(key))
    if changed:
        found.append(f"{', '.join(changed)} changed")
    return found


def argv_changes(old: list[str], new: list[str]) -> list[str]:
    """`ctx_size 2048 → 4096`, `--metrics added`, ... between two command lines (program first)."""
    found = []
    if old[:1] != new[:1]:
        found.append(f"program {_short(old[0]) if old else '(none)'} → {_short(new[0]) if new else '(none)'}")
    before, after = _options(old[1:]), _options(new[1:])
    for key in list(dict.fromkeys([*before, *after])):
        was, now = before.get(key), after.get(key)
        if was == now:
            continue
        if was is None:
            found.append(f"{key} added" + (f" ({now})" if now != key else ""))
        elif now is None:
            found.append(f"{key} removed")
        else:
            found.append(f"{key} {was} → {now}")
    return found


def _options(args: list[str]) -> dict[str, str]:
    """{field or flag: its value as shown} from `--flag value` / `--switch` arguments, in order."""
    found: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not re.match(r"--?[A-Za-z]", arg):
            # A value without a flag (an extra argument): shown as itself.
            found[arg] = arg
            i += 1
            continue
        flag = flag_name(arg)
        key = MANAGED_FLAGS.get(flag, flag)
        if "=" in arg:
            found[key] = _short(arg.split("=", 1)[1])
            i += 1
        elif i + 1 < len(args) and not re.match(r"--?[A-Za-z]", args[i + 1]):
            found[key] = _short(args[i + 1])
            i += 2
        else:
            # A switch: its spelling is its value (--jinja / --no-jinja).
            found[key] = flag if key != flag else key
            i += 1
    return found


def _short(value: str) -> str:
    return value.rsplit("/", 1)[-1] if value.startswith("/") else value
