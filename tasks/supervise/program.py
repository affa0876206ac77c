"""A long-running program under a supervisor: one description for launchd and systemd alike.

Model servers, the images worker and API, colima's VM and the boot job that
sets the Metal wired limit are all a `Program`. The backends (launchd.py,
systemd.py) turn one into a plist or a unit, and follow the same decision
table (decide.py) to install, start, restart once, leave alone or remove it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Input:
    """Something on the host the running process depends on, besides its own definition.

    Its value is read on the host: the target of a link (`current` -> the
    llama.cpp build) or the first line of a small file (a model file's stamp:
    sha256, size, mtime). The value the process was started with is recorded;
    a different value means a restart.

    `wanted`: the value this converge will give it (a link it will move), or
    `replaced`: this converge replaces it and its new value is known only once
    done (a model file fetched again). Neither: it stays what the host has now.
    """

    name: str
    path: str
    kind: Literal["link", "file"]
    wanted: str | None = None
    replaced: bool = False


@dataclass(frozen=True)
class Health:
    """How to tell the program is serving: `llama` is llama-server's /health (503 while it loads);
    `tcp`: it accepts a connection at `telnet://HOST:PORT` (rpc-server speaks no HTTP)."""

    url: str
    expect: Literal["llama", "http", "tcp"]
    timeout: int
    # llama: the GPU layers it asks for; once healthy its load log must say they are on a GPU
    # (tasks/supervise/offload.py), or it is degraded (on the CPU) and the converge fails.
    gpu_layers: int = 0


@dataclass(frozen=True)
class Agent:
    """Run in a user's GUI login session instead of as a system service: a LaunchAgent in
    `gui/<uid>` (macOS only). That domain exists only while the user is logged in at the
    Mac's screen (automatic login, FileVault off); the program runs as that user.
    Its plist lives in the user's ~/Library/LaunchAgents, its record beside the others'."""

    user: str
    uid: int
    home: str
    # launchd's domain of the session: what `launchctl bootstrap` and every service target name.
    domain: str = ""
    # The user's own LaunchAgents folder (not /Library/LaunchAgents, which every user's session loads).
    folder: str = ""

    @classmethod
    def of(cls, user: str, uid: int, home: str) -> Agent:
        return cls(user, uid, home, domain=f"gui/{uid}", folder=f"{home}/Library/LaunchAgents")


@dataclass(frozen=True)
class Program:
    # For people: "server q4", "images api".
    name: str
    # launchd's Label and systemd's unit name (layout.py derives both).
    label: str
    unit: str
    description: str
    argv: list[str]
    log: str
    working_directory: str
    user: str | None = None
    group: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    # Seconds between SIGTERM and SIGKILL when it stops (launchd ExitTimeOut, systemd TimeoutStopSec).
    stop_timeout: int = 30
    # Seconds before the supervisor starts it again after it exited.
    restart_delay: int = 10
    # Open files: launchd's soft default is 256, too few for a server with many clients and mmapped shards.
    open_files: int | None = 10240
    # False: runs once at load (the wired-limit job), never restarted by the supervisor.
    keep_alive: bool = True
    # systemd only: units to start after (launchd has no ordering).
    after: tuple[str, ...] = ()
    # SIGTERM to the main process only (the RQ worker finishes its job; its work horse is a child).
    kill_main_only: bool = False
    inputs: tuple[Input, ...] = ()
    health: Health | None = None
    # launchd: a LaunchAgent in this user's GUI session rather than a LaunchDaemon (kitty_launchd.kind).
    agent: Agent | None = None
    # For people, in the restart table (not part of the definition): "4096 tokens per request".
    note: str = ""


@dataclass(frozen=True)
class Family:
    """Programs that share a name prefix: one on the host that is not declared is ours, and removed."""

    name: str
    label_prefix: str
    unit_prefix: str
