"""Packages and tools every later step relies on (manual step 1.3)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, brew, files, pip

from tasks.config import KittyConfig
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.system.prerequisites_facts import DistInfos, has_pinned_distribution


@deploy("Prerequisites")
def install(cfg: KittyConfig, plat: Platform) -> None:
    if plat.package_manager == "brew":
        _brew_packages(cfg.packages.brew, plat)
    else:
        install_apt_missing(cfg.packages.apt, plat)
        _hf_venv(cfg, plat)


def _brew_packages(packages: list[str], plat: Platform) -> None:
    if plat.user == "root":
        raise DeployError(f"{host.name}: Homebrew refuses to run as root: deploy as the admin user")
    # Homebrew itself is installed by the macOS bootstrap (tasks/system/macos.py), which runs first.
    if packages:
        brew.packages(name="Install Homebrew packages", packages=packages, _env=plat.env)


def install_apt_missing(
    packages: list[str],
    plat: Platform,
    *,
    refresh_name: str = "Refresh the apt index",
    install_name: str = "Install apt packages",
) -> list:
    """Install those of `packages` that are not installed yet (Debian/Ubuntu); the operations,
    none when nothing is missing. Every step that needs an apt package goes through here."""
    installed = host.get_fact(DebPackages) or {}
    missing = [package for package in packages if package not in installed]
    if not missing:
        return []
    # Refresh the index only when something has to be installed: a converged
    # host must plan nothing, whatever the age of its apt cache.
    return [
        apt.update(name=refresh_name, _sudo=plat.sudo),
        apt.packages(
            name=install_name,
            packages=missing,
            no_recommends=True,
            _sudo=plat.sudo,
            _env={"DEBIAN_FRONTEND": "noninteractive"},
        ),
    ]


def _hf_venv(cfg: KittyConfig, plat: Platform) -> None:
    # Debian's packages lag far behind the `hf` CLI the models step uses: a pinned venv of our own.
    venv = layout.hf_dir(cfg)
    files.directory(name="Hugging Face CLI folder", path=venv, user=plat.user, _sudo=plat.sudo)
    pip.virtualenv(name="Hugging Face CLI venv", path=venv, python="python3", venv=True)
    # The pinned version already there: nothing to ask pip (whose `pip list` alone takes 1-2 s).
    if has_pinned_distribution(host.get_fact(DistInfos, venv=venv) or [], cfg.packages.hf_pip):
        return
    pip.packages(
        name="Hugging Face CLI",
        packages=[cfg.packages.hf_pip],
        pip=f"{venv}/bin/pip",
        _env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
