"""Scripted fact output for simulated hosts: a fresh one and a converged one per platform.

Keys are matched as substrings of the commands pyinfra runs (first match
wins), so more specific keys go first. Later steps add their facts here.
"""

from __future__ import annotations

from tests.plan.harness import group_data

DEFAULTS = group_data()
BREW_PACKAGES = DEFAULTS["kitty_packages"]["brew"]
APT_PACKAGES = DEFAULTS["kitty_packages"]["apt"]


def macos(*, installed: list[str] = (), arch: str = "arm64", user: str = "admin") -> dict:
    prefix = "/opt/homebrew" if arch == "arm64" else "/usr/local"
    return {
        "uname -s": "Darwin",
        "uname -m": arch,
        "id -un": user,
        # Before "command -v brew": pyinfra wraps brew facts in `if command -v brew`.
        "brew list --versions": [f"{name} 1.0" for name in installed],
        "command -v brew": f"{prefix}/bin/brew",
    }


def macos_converged(**kwargs) -> dict:
    return macos(installed=BREW_PACKAGES, **kwargs)


def linux(*, installed: list[str] = (), user: str = "admin") -> dict:
    return {
        "uname -s": "Linux",
        "uname -m": "x86_64",
        "id -un": user,
        "command -v apt-get": "/usr/bin/apt-get",
        "command -v systemctl": "/usr/bin/systemctl",
        "dpkg -l": [f"ii  {name}  1.0-1  amd64  test package" for name in installed],
    }


def linux_converged(**kwargs) -> dict:
    return linux(installed=APT_PACKAGES, **kwargs)
