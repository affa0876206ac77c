"""A fresh Mac made server-ready over SSH: Command Line Tools, Homebrew, power settings, GPU memory.

Each operation reads a fact and yields only what differs, so a converged Mac
plans nothing. Runs before the prerequisites: they need Homebrew.
"""

from __future__ import annotations

import re
import shlex

from pyinfra import host, logger
from pyinfra.api import FactBase, HiddenValue, QuoteString, StringCommand, deploy, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.connectors.util import SUDO_ASKPASS_ENV_VAR, _ensure_sudo_askpass_set_for_host
from pyinfra.facts.server import Which
from pyinfra.operations import server

from tasks import supervise
from tasks.config import KittyConfig
from tasks.host.layout import WIRED_LIMIT_LABEL
from tasks.host.platform import Platform
from tasks.supervise import Program, Slot, control
from tasks.system import memory_budget

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

# Homebrew's supported installer. Homebrew/install tags no releases: it is pinned to a
# commit of its main branch, and its sha256 is checked before it runs (a moved or
# tampered file is refused, never run). NONINTERACTIVE skips its prompt and makes it use
# `sudo -n`; with SUDO_ASKPASS set it uses `sudo -A` instead (have_sudo_access, execute_sudo).
HOMEBREW_INSTALL_COMMIT = "ca0130bd52235f2fcb2bf23cfdda004bc5d250c1"
HOMEBREW_INSTALL_SHA256 = "8ff338091a5e10bb5fc040b38316648110f42feff057ecf9feaab51fd0a13ef9"
HOMEBREW_INSTALL_URL = f"https://raw.githubusercontent.com/Homebrew/install/{HOMEBREW_INSTALL_COMMIT}/install.sh"
_FETCH_VERIFY_RUN = (
    "f=$(mktemp) && trap 'rm -f \"$f\"' EXIT && "
    f'curl -fsSL -o "$f" {HOMEBREW_INSTALL_URL} && '
    f'[ "$(shasum -a 256 "$f" | cut -d " " -f 1)" = {HOMEBREW_INSTALL_SHA256} ] || '
    '{ echo "Homebrew\'s installer could not be fetched or differs from its pinned sha256: not run" >&2; exit 1; }; '
    '/bin/bash "$f"'
)
# One command (an `env VAR=...` prefix may go in front of it).
HOMEBREW_INSTALL = f"NONINTERACTIVE=1 /bin/sh -c {shlex.quote(_FETCH_VERIFY_RUN)}"
# How to run the deploy so pyinfra asks for the sudo password once, up front. pyinfra 3.10's
# --use-sudo-password is read by nothing (pyinfra#1850): --same-sudo-password is the flag that asks.
SUDO_PASSWORD_FLAG = "--same-sudo-password"

# pmset settings are compared on the AC power profile: a server runs on mains.
AC_POWER = "AC Power"

WIRED_LIMIT_PLIST = f"/Library/LaunchDaemons/{WIRED_LIMIT_LABEL}.plist"
WIRED_LIMIT_LOG = f"/var/log/{WIRED_LIMIT_LABEL}.log"


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


class SudoAsRoot(FactBase[bool]):
    """Whether a command run through pyinfra's sudo becomes root; read with `_sudo=True`.

    A sudo that wants a password makes pyinfra ask for it here (once per run, kept
    in memory) unless the run already has one (--same-sudo-password).
    """

    default = bool

    def command(self) -> str:
        # The full path keeps this apart from other `id` facts.
        return "/usr/bin/id -u"

    def process(self, output) -> bool:
        return "".join(output).strip() == "0"


class FileVault(FactBase[str | None]):
    """`fdesetup status`: "on" (or being turned on), "off", or None where it cannot tell."""

    def command(self) -> str:
        return "fdesetup status 2>/dev/null || true"

    def process(self, output) -> str | None:
        text = " ".join(output)
        # "FileVault is Off, but will be enabled after the next login" locks at the next boot all the same.
        if "FileVault is On" in text or "Encryption in progress" in text or "will be enabled" in text:
            return "on"
        if "FileVault is Off" in text or "Decryption in progress" in text:
            return "off"
        return None


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
    """Install Homebrew with its own installer, as the calling (admin) user; pass `_env` with its prefix on PATH.

    When this run has a sudo password, the installer gets pyinfra's own askpass
    helper: its `sudo -A` then reads the password from the environment of this one
    command, as every sudo of pyinfra's does. It is never written to a file.
    """
    found = host.get_fact(Which, command="brew")
    if found:
        host.noop(f"Homebrew is installed ({found})")
        return
    password = run_sudo_password()
    if not password:
        yield HOMEBREW_INSTALL
        return
    # The helper pyinfra uploads for its own `sudo -A`: a script that prints $PYINFRA_SUDO_PASSWORD
    # (never the password itself), removed by pyinfra when it disconnects.
    askpass = _ensure_sudo_askpass_set_for_host(host)
    yield StringCommand(
        "env",
        StringCommand("SUDO_ASKPASS=", QuoteString(askpass), _separator=""),
        # Masked (*MASKED*) wherever pyinfra prints a command.
        StringCommand(SUDO_ASKPASS_ENV_VAR, QuoteString(HiddenValue(password)), _separator="="),
        HOMEBREW_INSTALL,
    )


def run_sudo_password() -> str | None:
    """The sudo password pyinfra holds for this host in this run: asked up front, or when sudo first wanted one."""
    return host.state.config.SUDO_PASSWORD or host.connector_data.get("prompted_sudo_password") or None


@operation()
def power_settings(settings: dict[str, int]):
    """Set the AC power profile's pmset settings that differ from `settings`; leave the others alone."""
    current = host.get_fact(PowerSettings).get(AC_POWER, {})
    changes = [(name, value) for name, value in settings.items() if current.get(name) != value]
    if not changes:
        host.noop("the power settings are as wanted")
        return
    yield StringCommand("pmset", "-c", *[str(part) for change in changes for part in change])


def wired_limit_program(limit_mb: int) -> Program:
    """The boot-time job that sets iogpu.wired_limit_mb: run once at load, as root, never kept alive."""
    return Program(
        name="wired-memory limit at boot",
        label=WIRED_LIMIT_LABEL,
        unit="",
        description="Metal wired-memory limit at boot",
        # An absolute path: launchd jobs get no PATH worth relying on.
        argv=["/usr/sbin/sysctl", f"{memory_budget.WIRED_LIMIT}={int(limit_mb)}"],
        log=WIRED_LIMIT_LOG,
        working_directory="/",
        keep_alive=False,
        open_files=None,
        stop_timeout=5,
    )


def render_wired_limit_plist(limit_mb: int) -> str:
    """The boot-time LaunchDaemon that sets iogpu.wired_limit_mb, exactly as uploaded."""
    return control.definition("launchd", wired_limit_program(limit_mb))


@deploy("macOS bootstrap")
def bootstrap(cfg: KittyConfig, plat: Platform, gpu: bool = True) -> None:
    """Developer tools, Homebrew and power settings; with `gpu`, the Metal wired-memory limit too."""
    warning = unattended_restart_warning(cfg)
    if warning and cfg.macos.filevault == "refuse":
        raise DeployError(f"{host.name}: {warning} (kitty_macos.filevault is 'refuse')")
    if warning:
        logger.warning(f"{host.print_prefix}{warning}")
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


def unattended_restart_warning(cfg: KittyConfig, plat: Platform | None = None) -> str | None:
    """Why this Mac would not come back by itself after a power cut, or None; for the plan and the health table."""
    if (plat is not None and not plat.is_mac) or cfg.macos.filevault == "ignore":
        return None
    if host.get_fact(FileVault) != "on":
        return None
    return (
        "FileVault is on: after a power cut this Mac waits at the unlock screen, and no LaunchDaemon "
        "(model servers, colima, the images service) starts until someone unlocks it there, whatever "
        "pmset autorestart says. For unattended restarts turn FileVault off (sudo fdesetup disable); for a "
        "planned reboot use sudo fdesetup authrestart; or set kitty_macos.filevault to 'ignore'"
    )


def _check_homebrew_can_install(plat: Platform) -> None:
    """Homebrew's installer needs sudo: passwordless, or through this run's sudo password (asked once)."""
    if plat.user == "root":
        raise DeployError(f"{host.name}: Homebrew refuses to be installed as root: deploy as the admin user")
    if host.get_fact(NonInteractiveSudo):
        return
    # Where sudo wants a password, pyinfra asks for it here unless the run has it already.
    as_root = host.get_fact(SudoAsRoot, _sudo=True, _ignore_errors=True)
    if not run_sudo_password():
        # "@local" and other connectors take no KITTY_HOSTS; an SSH host does.
        target = "" if host.name.startswith("@") else f"KITTY_HOSTS={plat.user}@{host.name} "
        raise DeployError(
            f"{host.name}: Homebrew is not installed under {plat.brew_prefix}, and sudo asks {plat.user!r} for a "
            "password, which this run does not have. Run the deploy so that pyinfra asks for it once "
            "(it is kept in memory only):\n"
            f"  {target}pyinfra inventory.py deploy.py {SUDO_PASSWORD_FLAG}"
        )
    if not as_root:
        raise DeployError(
            f"{host.name}: sudo did not accept the password for {plat.user!r}, or {plat.user!r} is not an "
            "administrator: Homebrew's installer needs both"
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
    # The sysctl is lost at reboot: a root LaunchDaemon sets it again at every boot
    # (and once now, when it is loaded: the same value, harmless).
    slot = Slot(WIRED_LIMIT_LABEL, "", wired_limit_program(limit))
    supervise.converge(cfg, plat, [slot])
