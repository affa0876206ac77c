"""Where a model server's layers are, from what the server itself says (issue 25).

llama.cpp's Metal backend takes only the system default device, which has been seen
to be nil in daemons and SSH sessions on Mac Studios: llama-server then serves from
the CPU, healthy and 10-50x slower. So every server that asks for GPU layers
(`n_gpu_layers` > 0) shows where they went after every (re)start, in the health
table and in diagnose, and one on the CPU is `degraded: on CPU (asked for N GPU
layers)`, which fails the converge with the remedy.

Read from the server's load log, because llama-server b11434 has no endpoint that
names its devices (/props, /v1/models and /metrics do not). At its default verbosity
it prints none of it either: llama.cpp's own INFO lines are trace level in
common/log.cpp. A server that asks for GPU layers therefore runs with
`--log-verbosity 4`, and its load then says `using device MTL0 (Apple M3 Ultra)` and
`offloaded 31/31 layers to GPU`, the lines the build's smoke test reads
(templates/llama-smoke.sh). A build with no usable GPU prints no `offloaded` line at
all (and, at any verbosity, `no usable GPU found, --gpu-layers option will be
ignored`, while it parses its arguments). The load of the running process is what
follows the last `srv  llama_server: initializing ...` line, the first line
llama-server logs at every start (after a timestamp and a level letter, as common_init
sets its log). Trace verbosity adds, per request other
than /health and /metrics, a `done request` line, and at start the last four
characters of a single API key.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyinfra.api import FactBase

if TYPE_CHECKING:
    from tasks.config import KittyConfig, ModelServer
    from tasks.host.platform import Platform

VERBOSITY = ["--log-verbosity", "4"]
# The line llama-server logs first at every start (tools/server/server.cpp: SRV_INF "initializing ...",
# after common_init's timestamp and level letter); what follows is the running process's load.
START = re.compile(r"srv +\S+: initializing \.\.\.")
# The same, for grep (POSIX BRE).
START_BRE = "srv  *[^ ]*: initializing [.][.][.]"
OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
DEVICE = re.compile(r"using device (\S+ \([^)]*\))")
NO_GPU = "no usable GPU found"
# Lines of a load that tell where the layers went (for grep -e, and kept in diagnose's bundle).
PATTERNS = (START_BRE, "offloaded [0-9]", "using device ", NO_GPU)


def asks_gpu(server: ModelServer) -> bool:
    return server.n_gpu_layers > 0


def arguments(server: ModelServer) -> list[str]:
    """What a server that asks for GPU layers adds to its argv, so its load log says where they went.

    (extra_args may not set the verbosity: flags.MANAGED_FLAGS.)"""
    return VERBOSITY if asks_gpu(server) else []


@dataclass(frozen=True)
class Placement:
    asked: int
    # From `offloaded N/M layers to GPU`; None: the load printed none (no GPU in this process).
    offloaded: int | None = None
    total: int | None = None
    device: str | None = None
    # False: no load of the running process in its log (rotated away, or not started yet).
    known: bool = True

    @property
    def wanted(self) -> int:
        """Layers that should be on the GPU: all llama.cpp can offload when asked for more."""
        if self.total is None:
            return self.asked
        return min(self.asked, self.total)

    @property
    def degraded(self) -> bool:
        return self.known and (not self.offloaded or self.offloaded < self.wanted)

    def text(self) -> str:
        if not self.known:
            return "layers: unknown (no load of the running server in its log)"
        if not self.offloaded:
            return f"degraded: on CPU (asked for {self.asked} GPU layers)"
        where = self.device or "the GPU"
        if self.offloaded < self.wanted:
            return (
                f"degraded: partly on CPU ({self.offloaded}/{self.total} layers on {where}, "
                f"asked for {self.asked} GPU layers)"
            )
        return f"layers on {where} ({self.offloaded}/{self.total})"


def last_load(lines: list[str]) -> list[str] | None:
    """The lines of the running process's load: from its last start on (None: no start in them).

    `no usable GPU found` is printed while the arguments are parsed, just before the start line."""
    starts = [i for i, line in enumerate(lines) if START.search(line)]
    if not starts:
        return None
    first = starts[-1]
    before = [line for line in lines[max(0, first - 3) : first] if NO_GPU in line]
    return before + lines[first:]


def placement(lines: list[str], asked: int) -> Placement:
    load = last_load(lines)
    if load is None:
        return Placement(asked, known=False)
    offloaded = total = device = None
    for line in load:
        if found := OFFLOADED.search(line):
            offloaded, total = int(found.group(1)), int(found.group(2))
        if found := DEVICE.search(line):
            device = device or found.group(1)
    return Placement(asked, offloaded, total, device)


def log_command(log: str) -> str:
    """POSIX sh printing the lines of `log` that tell where the running server's layers are."""
    quoted = shlex.quote(log)
    patterns = " ".join(f"-e {shlex.quote(p)}" for p in PATTERNS)
    return (
        f"n=$(grep -n {shlex.quote(START_BRE)} {quoted} 2>/dev/null | tail -n 1 | cut -d: -f1); "
        f's=$(( ${{n:-1}} - 3 )); [ "$s" -ge 1 ] || s=1; '
        f'[ -n "$n" ] && tail -n +"$s" {quoted} | grep {patterns} | head -n 40; true'
    )


class LoadLog(FactBase[list]):
    """The lines of a server's log that tell where its running process put its layers."""

    default = list

    def command(self, log: str) -> str:
        return log_command(log)

    def process(self, output) -> list:
        return [line for line in output]


def remedy(cfg: KittyConfig, plat: Platform) -> str:
    """What to do about a server that computes on the CPU although it asks for GPU layers."""
    if cfg.llamacpp.backend == "cpu":
        return (
            "the llama.cpp build is for the CPU (kitty_llamacpp.backend: cpu): build for the GPU "
            "(backend auto, metal or cuda), or set the server's n_gpu_layers to 0 to serve on the CPU knowingly"
        )
    if plat.os == "macos" and cfg.launchd.kind == "daemon":
        return (
            "Metal gave the server no device in its LaunchDaemon (seen in daemons and SSH sessions on Mac "
            "Studios). Run the model servers as LaunchAgents in the admin's GUI session: kitty_launchd.kind = "
            "'agent', with automatic login on and FileVault off (System Settings > Users & Groups), then "
            "converge again; or set n_gpu_layers to 0 to serve on the CPU knowingly"
        )
    if plat.os == "macos":
        return (
            "Metal gave the server no device even in the admin's GUI session: check that the admin is logged in "
            "at the Mac's screen (automatic login), and that the build has Metal (kitty_llamacpp.backend)"
        )
    return (
        "the build found no GPU: check the driver (nvidia-smi) and the servers' environment "
        "(CUDA_VISIBLE_DEVICES), or set n_gpu_layers to 0 to serve on the CPU knowingly"
    )
