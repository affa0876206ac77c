"""Scripted fact output for simulated hosts: a fresh one and a converged one per platform.

Keys are matched as substrings of the commands pyinfra runs (first match
wins), so more specific keys go first. Later steps add their facts here.
"""

from __future__ import annotations

from tasks import config
from tasks.host import layout
from tasks.system import macos as mac
from tasks.system import memory_budget
from tests.plan import inference_facts, launchd_facts, llamacpp_facts, observability_facts, supervise_facts
from tests.plan.harness import group_data

DEFAULTS = group_data()
BREW_PACKAGES = DEFAULTS["kitty_packages"]["brew"]
APT_PACKAGES = DEFAULTS["kitty_packages"]["apt"]

# A 256 GiB Mac Studio: the manual's four servers need ~217 GiB of GPU memory,
# more than a 192 GiB Mac has (tests/unit/test_memory_budget.py).
MAC_MEMORY_GIB = 256
# `pmset -g custom` on a Mac as it comes: it sleeps, and stays off after a power cut.
PMSET_AS_SHIPPED = {"sleep": 1, "autorestart": 0, "womp": 1}
ASKPASS_PATH = "/tmp/pyinfra-sudo-askpass-Xq3v9TzK2mPa"


def macos(
    *,
    installed: list[str] = (),
    arch: str = "arm64",
    user: str = "admin",
    memory_gib: int = MAC_MEMORY_GIB,
    bootstrapped: bool = True,
    filevault: bool = False,
) -> dict:
    """A Mac with the given brew packages; `bootstrapped=False`: brand new, without even the developer tools.

    `filevault`: the disk is encrypted, so the Mac waits at the unlock screen after a power cut.
    """
    prefix = "/opt/homebrew" if arch == "arm64" else "/usr/local"
    memory = memory_gib * memory_budget.GIB
    wired_limit = memory_budget.wired_limit_mb(config.load(DEFAULTS), memory) if bootstrapped else 0
    pmset = {**PMSET_AS_SHIPPED, **DEFAULTS["kitty_macos"]["pmset"]} if bootstrapped else PMSET_AS_SHIPPED
    facts = {
        # pyinfra's own askpass helper, created when a command needs the run's sudo password.
        "pyinfra-sudo-askpass-": ASKPASS_PATH,
        "uname -s": "Darwin",
        "uname -m": arch,
        "id -un": user,
        # pyinfra's Home fact: colima keeps its VM and socket in the admin's home.
        "echo ~": f"/Users/{user}",
        "xcode-select -p": mac.CLT_DIR if bootstrapped else "",
        "sudo -n -l mkdir": "yes",
        # tasks.system.macos.SudoAsRoot: a command through pyinfra's sudo runs as root.
        "/usr/bin/id -u": "0",
        "fdesetup status": "FileVault is On." if filevault else "FileVault is Off.",
        "pmset -g custom": ["AC Power:", " Sleep On Power Button 1", " disksleep            10"]
        + [f" {name:<20} {value}" for name, value in pmset.items()]
        + [" displaysleep         10", " hibernatefile        /var/vm/sleepimage"],
        "sysctl hw.memsize iogpu.wired_limit_mb": [f"hw.memsize: {memory}", f"iogpu.wired_limit_mb: {wired_limit}"],
        "sysctl iogpu.wired_limit_mb": f"iogpu.wired_limit_mb: {wired_limit}",
        # Before "command -v brew": pyinfra wraps brew facts in `if command -v brew`.
        "brew list --versions": [f"{name} 1.0" for name in installed],
        "command -v brew": f"{prefix}/bin/brew" if bootstrapped else "",
    }
    if bootstrapped:
        # The boot job loaded (it ran and exited) with the limit it sets, and a record of its start.
        records = layout.records_dir(config.load(DEFAULTS))
        program = mac.wired_limit_program(wired_limit)
        facts.update(supervise_facts.program(program, os="macos", records_dir=records, values={}))
    return facts


def macos_new(**kwargs) -> dict:
    """A Mac as it comes out of the box: no developer tools, no Homebrew, default pmset and wired limit."""
    return macos(bootstrapped=False, **kwargs)


def macos_converged(**kwargs) -> dict:
    who = {"user": kwargs.get("user", "admin"), "arch": kwargs.get("arch", "arm64")}
    llama = llamacpp_facts.converged(DEFAULTS, os="macos", **who)
    inference = inference_facts.converged(DEFAULTS, os="macos", **who)
    stack = stack_converged(os="macos", **who)
    observability = observability_facts.converged(DEFAULTS, os="macos", user=who["user"])
    return {**llama, **inference, **stack, **observability, **macos(installed=BREW_PACKAGES, **kwargs)}


def linux(*, installed: list[str] = (), user: str = "admin") -> dict:
    return {
        "uname -s": "Linux",
        "uname -m": "x86_64",
        "id -un": user,
        "command -v apt-get": "/usr/bin/apt-get",
        "command -v systemctl": "/usr/bin/systemctl",
        "command -v useradd": "/usr/sbin/useradd",
        "dpkg -l": [f"ii  {name}  1.0-1  amd64  test package" for name in installed],
    }


def linux_converged(**kwargs) -> dict:
    llama = llamacpp_facts.converged(DEFAULTS, os="linux", user=kwargs.get("user", "admin"))
    inference = inference_facts.converged(DEFAULTS, os="linux", user=kwargs.get("user", "admin"))
    return {
        **llama,
        **inference,
        **observability_facts.converged(DEFAULTS, os="linux", user=kwargs.get("user", "admin")),
        **hf_venv(user=kwargs.get("user", "admin")),
        **stack_converged(os="linux", user=kwargs.get("user", "admin")),
        # docker.io: the Linux engine of the application stack (tasks/app/stack.py).
        **linux(installed=[*APT_PACKAGES, "docker.io"], **kwargs),
    }


def hf_venv(user: str) -> dict:
    """The Hugging Face CLI venv of a converged Linux host."""
    venv = f"{DEFAULTS['kitty_paths']['opt_dir']}/hf"
    return {
        f"{venv}/bin/pip freeze --all": [DEFAULTS["kitty_packages"].get("hf_pip", "huggingface_hub==2.4.0")],
        **launchd_facts.file(f"{venv}/bin/activate", "# venv", user=user, group=user),
        **launchd_facts.directory(venv, user=user, group=user),
    }


def stack_converged(*, os: str, user: str, arch: str = "x86_64", data: dict | None = None) -> dict:
    """The application stack up to date: runtime running, checkout at its ref, .env current, compose in step."""
    from tests.plan import stack_facts

    return stack_facts.converged(data or DEFAULTS, os=os, user=user, arch=arch)
