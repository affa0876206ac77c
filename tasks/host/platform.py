"""The only place outside tasks/supervise that knows macOS from Linux.

Everything platform-specific the other steps need (package manager,
supervisor, Homebrew prefix, whether system changes need sudo, the default
llama.cpp backend, compose, the firewall, log rotation, ...) is decided here, once,
from facts, each as a question named for what it decides
(tests/unit/test_platform_branches.py keeps the others from asking `os` itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pyinfra import host
from pyinfra.api.exceptions import DeployError
from pyinfra.facts.server import Arch, Kernel, Which

from tasks.host.host_facts import CurrentUser

# Homebrew's own choice: Apple Silicon under /opt/homebrew, Intel under /usr/local.
BREW_PREFIX = {"arm64": "/opt/homebrew", "x86_64": "/usr/local"}
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
# The container runtimes each OS runs (kitty_stack.runtime), `auto`'s choice first.
CONTAINER_RUNTIMES = {
    "macos": ("colima", "docker-desktop", "orbstack", "external"),
    "linux": ("engine", "external"),
}

# llama.cpp backends each OS can build, and the CMake switches that select them.
# Metal's shader library is embedded so the binary runs from any folder.
LLAMACPP_BACKENDS = {
    "macos": {
        "metal": ["-DGGML_METAL=ON", "-DGGML_METAL_EMBED_LIBRARY=ON", "-DGGML_BLAS=ON", "-DGGML_BLAS_VENDOR=Apple"],
        "cpu": ["-DGGML_METAL=OFF", "-DGGML_BLAS=ON", "-DGGML_BLAS_VENDOR=Apple"],
    },
    "linux": {
        "cpu": [],
        "cuda": ["-DGGML_CUDA=ON"],
    },
}


# llama.cpp without -march=native: its baseline instruction set (ggml/CMakeLists.txt at b11434:
# SSE4.2, AVX, AVX2, BMI2, FMA, F16C on x86-64; AVX-512 and AMX off).
PORTABLE_CPU_FLAGS = ["-DGGML_NATIVE=OFF"]
# GGML_NATIVE=OFF also turns CUDA's `native` architecture into a list of seven generic ones
# (ggml-cuda/CMakeLists.txt): a build several times longer whose Hopper code is PTX compiled at
# every start. The GPU is the host's own, so it keeps its native code while the CPU part is portable.
PORTABLE_CUDA_FLAGS = ["-DCMAKE_CUDA_ARCHITECTURES=native"]


@dataclass(frozen=True)
class Platform:
    os: Literal["macos", "linux"]
    arch: str
    user: str
    # Operations that change the system run with sudo unless we are root.
    sudo: bool
    brew_prefix: str | None = None

    @property
    def supervisor(self) -> Literal["launchd", "systemd"]:
        return "launchd" if self.os == "macos" else "systemd"

    @property
    def is_mac(self) -> bool:
        """For the steps whose very subject is the Mac: its bootstrap, its wired-memory budget, FileVault,
        its hidden service account."""
        return self.os == "macos"

    @property
    def package_manager(self) -> Literal["brew", "apt"]:
        return "brew" if self.os == "macos" else "apt"

    @property
    def container_runtimes(self) -> tuple[str, ...]:
        """The container runtimes kitty_stack.runtime may name here, `auto`'s choice first."""
        return CONTAINER_RUNTIMES[self.os]

    @property
    def docker_sudo(self) -> bool:
        """Whether the docker CLI runs with sudo: a Linux admin is not necessarily in the docker group
        (that needs a new login); a Mac's engine socket is the admin's own."""
        return self.os == "linux" and self.sudo

    @property
    def docker_in_a_vm(self) -> bool:
        """The engine runs in a VM (colima, Docker Desktop, OrbStack): the host's network is the VM's."""
        return self.os == "macos"

    @property
    def compose_standalone(self) -> bool:
        """compose is Homebrew's standalone `docker-compose` (macOS), not a docker CLI plugin that
        kitty-ops installs where the OS packages none (Debian's docker.io)."""
        return self.os == "macos"

    @property
    def compose_argv(self) -> tuple[str, ...]:
        return ("docker-compose",) if self.compose_standalone else ("docker", "compose")

    @property
    def drop_caches_command(self) -> str:
        """Empty the file cache, so a model is read from disk again (the bench's cold start)."""
        return "purge" if self.os == "macos" else "sync && echo 3 > /proc/sys/vm/drop_caches"

    @property
    def memory_counters(self) -> Literal["meminfo", "vm_stat"]:
        """Where the kernel tells memory and swap: /proc/meminfo, or vm_stat and sysctl."""
        return "vm_stat" if self.os == "macos" else "meminfo"

    @property
    def firewall(self) -> Literal["pf", "nftables"]:
        return "pf" if self.os == "macos" else "nftables"

    @property
    def mlock_allowed(self) -> bool:
        """Whether a supervised server can lock its model in memory: a launchd daemon can; a systemd
        unit keeps the default RLIMIT_MEMLOCK (a few MiB), so an mlock load mode locks nothing there."""
        return self.os == "macos"

    @property
    def log_rotator(self) -> Literal["newsyslog", "logrotate"]:
        return "newsyslog" if self.os == "macos" else "logrotate"

    @property
    def default_backend(self) -> Literal["metal", "cpu"]:
        return "metal" if self.os == "macos" else "cpu"

    def hf_binary(self, opt_dir: str) -> str:
        """The Hugging Face CLI: Homebrew's formula on macOS, a venv of ours on Linux."""
        if self.brew_prefix:
            return f"{self.brew_prefix}/bin/hf"
        return f"{opt_dir}/hf/bin/hf"

    def llamacpp_cpu(self, cpu: str) -> Literal["native", "portable"]:
        """The CPU code to build (`auto` resolved): native on a Mac, portable on Linux.

        Apple Silicon runs every instruction it advertises; a Linux host is often a VM
        whose CPU advertises AVX-512 or AMX that the hypervisor does not let run.
        """
        if cpu == "auto":
            return "native" if self.os == "macos" else "portable"
        return cpu

    def llamacpp_backend_flags(self, backend: str, cpu: str = "auto") -> tuple[str, list[str]]:
        """The backend to build (`auto` resolved) and its CMake switches."""
        if backend == "auto":
            backend = self.default_backend
        flags = LLAMACPP_BACKENDS[self.os].get(backend)
        if flags is None:
            raise DeployError(
                f"kitty_llamacpp.backend: {backend!r} cannot be built on {self.os} "
                f"(choose from {', '.join(['auto', *LLAMACPP_BACKENDS[self.os]])})"
            )
        # Native is llama.cpp's own default: said by leaving it out, so a Mac's build id stays what it was.
        if self.llamacpp_cpu(cpu) == "portable":
            flags = flags + PORTABLE_CPU_FLAGS + (PORTABLE_CUDA_FLAGS if backend == "cuda" else [])
        return backend, flags

    @property
    def env(self) -> dict[str, str]:
        """Environment for commands: a non-login SSH session has no Homebrew on PATH."""
        if self.brew_prefix:
            return {"PATH": f"{self.brew_prefix}/bin:{self.brew_prefix}/sbin:{SYSTEM_PATH}"}
        return {}


def detect() -> Platform:
    kernel = (host.get_fact(Kernel) or "").strip()
    arch = (host.get_fact(Arch) or "").strip()
    user = host.get_fact(CurrentUser)
    if kernel == "Darwin":
        if arch not in BREW_PREFIX:
            raise DeployError(f"{host.name}: unsupported Mac architecture {arch!r} (expected arm64 or x86_64)")
        return Platform(os="macos", arch=arch, user=user, sudo=user != "root", brew_prefix=BREW_PREFIX[arch])
    if kernel == "Linux":
        missing = [tool for tool in ("apt-get", "systemctl") if not host.get_fact(Which, command=tool)]
        if missing:
            raise DeployError(
                f"{host.name}: Linux without {' and '.join(missing)}: only Debian/Ubuntu with systemd is supported"
            )
        return Platform(os="linux", arch=arch, user=user, sudo=user != "root")
    raise DeployError(
        f"{host.name}: unsupported operating system {kernel or 'unknown'!r}: KITTY runs on macOS or Linux"
    )
