"""A fresh Mac made server-ready over SSH: Command Line Tools, Homebrew, power settings, GPU memory.

Each operation reads a fact and yields only what differs, so a converged Mac
plans nothing. Runs before the prerequisites: they need Homebrew.
"""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, deploy, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.api.util import get_template
from pyinfra.facts.server import Which
from pyinfra.operations import files, server

from tasks import memory_budget
from tasks.config import KittyConfig
from tasks.platform import Platform

CLT_DIR = "/Library/Developer/CommandLineTools"
# softwareupdate lists the Command Line Tools only while this file exists (Homebrew's install.sh does the same).
CLT_PLACEHOLDER = "/tmp/.com.apple.dt.CommandLineTools.installondemand.in-progress"
# The newest "Command Line Tools for Xcode-…" label, extracted as Homebrew's install.sh does.
CLT_LABEL = (
    "softwareupdate -l 2>/dev/null | grep -B 1 -E 'Command Line Tools' | awk -F'*' '/^ *\\*/ {print $2}' "
    "| sed -e 's/^ *Label: //' -e 's/^ *//' | sort -V | tail -n1"
)
CLT_INSTALL = (
    f"touch {CLT_PLACEHOLDER} && trap 'rm -f {CLT_PLACEHOLDER}' EXIT && "
    f"label=$({CLT_LABEL}) && "
    'if [ -z "$label" ]; then echo "softwareupdate offers no Command Line Tools" >&2; exit 1; fi && '
    f'softwareupdate -i "$label" && xcode-select --switch {CLT_DIR}'
)
CLT_BY_HAND = (
    f"  sudo touch {CLT_PLACEHOLDER}\n"
    "  softwareupdate -l | grep 'Label: Command Line Tools'   # take the newest label\n"
    '  sudo softwareupdate -i "Command Line Tools for Xcode-<version>"\n'
    f"  sudo rm -f {CLT_PLACEHOLDER}\n"
    "or, at the Mac's screen: xcode-select --install"
)

# Homebrew's supported installer. NONINTERACTIVE skips its prompt, and makes it use
# `sudo -n`: it cannot ask for a password over a non-interactive SSH session.
HOMEBREW_INSTALL = (
    'NONINTERACTIVE=1 /bin/bash -c "$(curl -fsSL https://raw.githubusercontent.com/Homebrew/install/HEAD/install.sh)"'
)

# pmset settings are compared on the AC power profile: a server runs on mains.
AC_POWER = "AC Power"

WIRED_LIMIT_LABEL = "com.kitty.iogpu-wired-limit"
WIRED_LIMIT_PLIST = f"/Library/LaunchDaemons/{WIRED_LIMIT_LABEL}.plist"
WIRED_LIMIT_LOG = f"/var/log/{WIRED_LIMIT_LABEL}.log"
WIRED_LIMIT_TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "wired-limit.plist.j2"


class DeveloperDir(FactBase[str | None]):
    """The selected developer directory when it has a working git (CLT or Xcode), else None."""

    def command(self) -> str:
        return 'd=$(xcode-select -p 2>/dev/null) && test -x "$d/usr/bin/git" && echo "$d" || true'

    def process(self, output) -> str | None:
        return "".join(output).strip() or None


class NonInteractiveSudo(FactBase[bool]):
    """Whether sudo works without a password prompt: Homebrew's NONINTERACTIVE installer needs it."""

    default = bool

    def command(self) -> str:
        # The very check Homebrew's install.sh makes before it starts.
        return "/usr/bin/sudo -n -l mkdir >/dev/null 2>&1 && echo yes || echo no"

    def process(self, output) -> bool:
        return "".join(output).strip() == "yes"


class PowerSettings(FactBase[dict[str, dict[str, int]]]):
    """`pmset -g custom`, per power profile: {"AC Power": {"sleep": 1, "womp": 1, ...}}."""

    default = dict

    def command(self) -> str:
        return "pmset -g custom"

    def process(self, output) -> dict[str, dict[str, int]]:
        return parse_pmset(output)


# " Sleep On Power Button 1" or " sleep   0 (sleep prevented by ...)": a name, then a number.
PMSET_LINE = re.compile(r"^\s+(\S.*?)\s+(-?\d+)\b")


def parse_pmset(lines) -> dict[str, dict[str, int]]:
    profiles: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in lines:
        if line.strip().endswith(":") and not line.startswith((" ", "\t")):
            current = profiles.setdefault(line.strip()[:-1], {})
            continue
        match = PMSET_LINE.match(line)
        if match and current is not None:
            current[match.group(1)] = int(match.group(2))
    return profiles


@operation()
def command_line_tools():
    """Install the Xcode Command Line Tools unattended, through softwareupdate."""
    developer_dir = host.get_fact(DeveloperDir)
    if developer_dir:
        host.noop(f"the developer tools are installed ({developer_dir})")
        return
    yield CLT_INSTALL


@operation()
def homebrew():
    """Install Homebrew with its own installer, as the calling (admin) user; pass `_env` with its prefix on PATH."""
    found = host.get_fact(Which, command="brew")
    if found:
        host.noop(f"Homebrew is installed ({found})")
        return
    yield HOMEBREW_INSTALL


@operation()
def power_settings(settings: dict[str, int]):
    """Set the AC power profile's pmset settings that differ from `settings`; leave the others alone."""
    current = host.get_fact(PowerSettings).get(AC_POWER, {})
    changes = [(name, value) for name, value in settings.items() if current.get(name) != value]
    if not changes:
        host.noop("the power settings are as wanted")
        return
    yield StringCommand("pmset", "-c", *[str(part) for change in changes for part in change])


def render_wired_limit_plist(limit_mb: int) -> str:
    """The boot-time LaunchDaemon that sets iogpu.wired_limit_mb, exactly as uploaded."""
    return get_template(str(WIRED_LIMIT_TEMPLATE)).render(
        label=WIRED_LIMIT_LABEL, wired_limit_mb=limit_mb, log_path=WIRED_LIMIT_LOG
    )


@deploy("macOS bootstrap")
def bootstrap(cfg: KittyConfig, plat: Platform, gpu: bool = True) -> None:
    """Developer tools, Homebrew and power settings; with `gpu`, the Metal wired-memory limit too."""
    if cfg.macos.command_line_tools == "stop" and not host.get_fact(DeveloperDir):
        raise DeployError(
            f"{host.name}: the Xcode Command Line Tools are missing and kitty_macos.command_line_tools is 'stop'. "
            f"Install them, then converge again:\n{CLT_BY_HAND}"
        )
    command_line_tools(name="Install the Xcode Command Line Tools", _sudo=plat.sudo)

    if not host.get_fact(Which, command="brew", _env=plat.env):
        _check_homebrew_can_install(plat)
    homebrew(name="Install Homebrew", _env=plat.env)

    if cfg.macos.pmset:
        power_settings(name="Set the power settings (pmset)", settings=cfg.macos.pmset, _sudo=plat.sudo)

    if gpu:
        _wired_limit(cfg, plat)


def _check_homebrew_can_install(plat: Platform) -> None:
    if plat.user == "root":
        raise DeployError(f"{host.name}: Homebrew refuses to be installed as root: deploy as the admin user")
    if not host.get_fact(NonInteractiveSudo):
        raise DeployError(
            f"{host.name}: Homebrew is not installed under {plat.brew_prefix}, and its unattended installer needs "
            f"sudo without a password prompt, which {plat.user!r} does not have. Either install it once by hand:\n"
            f"  ssh -t {plat.user}@{host.name} '{HOMEBREW_INSTALL}'\n"
            f"or allow {plat.user!r} passwordless sudo (a file in /etc/sudoers.d, edited with visudo) "
            "and converge again."
        )


def _wired_limit(cfg: KittyConfig, plat: Platform) -> None:
    memory, current = memory_budget.memory_facts()
    if current is None:
        raise DeployError(
            f"{host.name}: sysctl has no {memory_budget.WIRED_LIMIT}: "
            "the Metal wired-memory limit needs macOS 14 or later"
        )
    limit = memory_budget.wired_limit_mb(cfg, memory)
    server.sysctl(
        name=f"Let Metal wire {limit} MiB (iogpu.wired_limit_mb)",
        key=memory_budget.WIRED_LIMIT,
        value=limit,
        _sudo=plat.sudo,
    )
    # The sysctl is lost at reboot: a root LaunchDaemon sets it again at every boot.
    # launchd loads it at the next boot; the limit is already set for this one.
    files.put(
        name="Set the wired-memory limit at boot (LaunchDaemon)",
        src=StringIO(render_wired_limit_plist(limit)),
        dest=WIRED_LIMIT_PLIST,
        user="root",
        group="wheel",
        mode="644",
        create_remote_dir=False,
        _sudo=plat.sudo,
    )
