"""Converge a simulated Mac (sandbox/macsim) with the real deploy.py, over SSH, and read what launchd saw.

    mac = SimMac.start("kitty-macsim-x", ssh_port=2231)
    mac.seed_build("b11434")
    result = mac.converge()
    assert result.code == 0 and result.rejected() == []
    assert result.starts() == {"com.kitty.llama-server.q4": 1, ...}

The sim Mac's launchctl logs every call and every process it spawns
(/var/log/macsim/*.jsonl); a ConvergeResult holds those of its own converge only.

As on a fresh Mac, sudo asks for the admin's password: every run is given it as an
operator gives it, `--same-sudo-password` answered on the terminal (here: stdin, with no
controlling terminal), so each sudo goes through pyinfra's askpass helper. And the Mac's
`hostname` changes before every run, as a Mac's does when its network changes.
"""

from __future__ import annotations

import json
import os
import runpy
import shlex
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.macsim import macsim
from tasks import config
from tasks.host import layout
from tasks.host.platform import BREW_PREFIX, Platform
from tasks.inference import llamacpp

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = ROOT / "tests" / "macsim" / "inventory.py"
GROUP_DATA = [ROOT / "group_data", ROOT / "sandbox" / "macsim" / "group_data"]
STUB = ROOT / "sandbox" / "macsim" / "llama-server-stub"
LOGS = "/var/log/macsim"
QUIET_HF = {"HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}
MAC = Platform(os="macos", arch="arm64", user="admin", sudo=True, brew_prefix=BREW_PREFIX["arm64"])


@dataclass
class ConvergeResult:
    code: int
    output: str
    calls: list[dict] = field(default_factory=list)
    spawns: list[dict] = field(default_factory=list)
    # pyinfra's --json results (the harness always asks for them).
    results: dict | None = None

    def changed(self) -> list[str]:
        """The operations that changed something on the Mac."""
        operations = ((self.results or {}).get("results") or {}).get("operations") or []
        return [op["name"] for op in operations if op.get("success")]

    def starts(self) -> dict[str, int]:
        """label -> number of processes launchd spawned for it during this converge."""
        return dict(Counter(spawn["label"] for spawn in self.spawns))

    def rejected(self) -> list[dict]:
        """launchctl calls that exited non-zero: what real launchctl would have refused.

        A `print` answering 113 is not among them: "not loaded" is the answer to a question.
        """
        return [call for call in self.calls if call["exit"] != 0 and not _is_not_found_query(call)]


def _is_not_found_query(call: dict) -> bool:
    return call["argv"][1:2] == ["print"] and call["exit"] == 113


def group_data(overrides: dict | None = None) -> dict:
    """The host data the deploy sees: group_data/, the sim Mac's, then `overrides` (whole top-level keys)."""
    data: dict = {}
    for folder in GROUP_DATA:
        names = runpy.run_path(str(folder / "all.py"))
        keys = names.get("__all__") or [k for k in names if not k.startswith("_") and k.startswith("kitty_")]
        data.update({k: names[k] for k in keys})
    data.update(overrides or {})
    return data


class SimMac:
    def __init__(self, target: macsim.Target):
        self.target = target
        self.name = target.name
        self.ssh_port = target.ssh_port

    @classmethod
    def start(cls, name: str = macsim.DEFAULT_NAME, ssh_port: int = macsim.DEFAULT_PORT) -> SimMac:
        return cls(macsim.start(name, ssh_port))

    def stop(self) -> None:
        macsim.stop(self.name)

    # --- inside the Mac ---------------------------------------------------------

    def exec(self, command: str, user: str = "root", input: str | None = None) -> subprocess.CompletedProcess:
        """`sh -c command` in the sim Mac (docker exec: no SSH, no sudo involved)."""
        return subprocess.run(
            ["docker", "exec", "-i", "-u", user, self.name, "sh", "-c", command],
            text=True,
            input=input,
            capture_output=True,
            timeout=120,
        )

    def check(self, command: str, user: str = "root", input: str | None = None) -> str:
        p = self.exec(command, user, input)
        if p.returncode != 0:
            raise AssertionError(f"in {self.name}: {command!r} exited {p.returncode}:\n{p.stdout}{p.stderr}")
        return p.stdout

    def _jsonl(self, name: str) -> list[dict]:
        out = self.check(f"cat {LOGS}/{name}")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def launchctl_calls(self) -> list[dict]:
        return self._jsonl("launchctl.jsonl")

    def spawns(self) -> list[dict]:
        return self._jsonl("spawns.jsonl")

    def reset_logs(self) -> None:
        self.check(f'for f in {LOGS}/*.jsonl; do : > "$f"; done')

    # --- machine state the scenarios change ------------------------------------

    def set_sysctl(self, key: str, value: int) -> None:
        self._update_json("/var/db/macsim/sysctl.json", {key: value})

    def set_filevault(self, on: bool) -> None:
        self.check(f"echo {'on' if on else 'off'} > /var/db/macsim/filevault")

    def replace_upstream_file(self, repo: str, name: str) -> None:
        """The file at the same revision now has other bytes upstream (its generation goes up)."""
        state = json.loads(self.check("cat /var/db/macsim/hf.json"))
        key = f"{repo}/{name}"
        state.setdefault("generation", {})[key] = state.get("generation", {}).get(key, 0) + 1
        self.check("cat > /var/db/macsim/hf.json", input=json.dumps(state))

    def _update_json(self, path: str, changes: dict) -> None:
        state = json.loads(self.check(f"cat {path}"))
        state.update(changes)
        self.check(f"cat > {path}.tmp && mv {path}.tmp {path}", input=json.dumps(state))

    def seed_build(self, ref: str, data: dict | None = None, commit: str | None = None) -> str:
        """Put a stub llama-server where the deploy looks for the build of `ref`, so it needs no compile.

        Returns the build id (the one tasks.inference.llamacpp.wanted_build computes for a Mac).
        """
        overrides = dict(data or {})
        llama = {**group_data(overrides)["kitty_llamacpp"], "ref": ref}
        cfg = config.load(group_data({**overrides, "kitty_llamacpp": llama}))
        build = llamacpp.wanted_build(cfg, MAC)
        prefix = f"{layout.llamacpp_dir(cfg)}/builds/{build.id}"
        record = json.dumps({"ref": ref, "commit": commit or "0" * 40, "cmake_args": " ".join(build.cmake_args)})
        self.check(
            f"install -d -o admin {shlex.quote(cfg.paths.opt_dir)} {shlex.quote(layout.llamacpp_dir(cfg))} "
            f"{shlex.quote(layout.llamacpp_dir(cfg) + '/builds')} && mkdir -p {shlex.quote(prefix)}/bin && "
            f"cat > {shlex.quote(prefix)}/bin/llama-server && chmod 755 {shlex.quote(prefix)}/bin/llama-server && "
            f"echo {shlex.quote(record)} > {shlex.quote(prefix)}/build.json && chown -R admin {shlex.quote(prefix)}",
            input=STUB.read_text(),
        )
        return build.id

    # --- the converge -------------------------------------------------------------

    def new_network(self) -> str:
        """The Mac joined another network: hostname(1) and `uname -n` answer another name."""
        self._networks = getattr(self, "_networks", 0) + 1
        name = f"kitty-studio-{self._networks}.dhcp.example"
        self.check("cat > /var/db/macsim/hostname", input=name + "\n")
        return name

    def converge(self, data: dict | None = None, groups=("inference",), extra_args=()) -> ConvergeResult:
        """Run `pyinfra tests/macsim/inventory.py deploy.py -y` against the sim Mac, as admin over SSH."""
        if tuple(groups) != ("inference",):
            raise ValueError("the sim Mac converges the inference role only (tests/macsim/inventory.py)")
        return self.run("deploy.py", data, extra_args)

    def run(self, script: str, data: dict | None = None, extra_args=(), sudo_password: bool = True) -> ConvergeResult:
        """Run `pyinfra tests/macsim/inventory.py SCRIPT -y` against the sim Mac (deploy.py, stop.py, ...)."""
        self.new_network()
        calls_before = len(self.launchctl_calls())
        spawns_before = len(self.spawns())
        env = {
            **os.environ,
            **QUIET_HF,
            "MACSIM_SSH_PORT": str(self.ssh_port),
            "MACSIM_SSH_KEY": str(self.target.key),
            "MACSIM_SSH_KNOWN_HOSTS": str(self.target.known_hosts),
        }
        with tempfile.TemporaryDirectory(prefix="macsim-data.") as extra:
            command = [sys.executable, "-m", "pyinfra", str(INVENTORY), script, "-y", "--json"]
            if sudo_password:
                command.append("--same-sudo-password")
            command += ["--group-data", str(GROUP_DATA[1])]
            if data:
                # Whole top-level keys, as JSON: the last group data folder wins.
                (Path(extra) / "all.py").write_text(
                    "import json as _json\n"
                    f"globals().update(_json.loads({json.dumps(json.dumps(data))}))\n"
                    f"__all__ = {sorted(data)!r}\n"
                )
                command += ["--group-data", extra]
            command += list(extra_args)
            # No controlling terminal: pyinfra's getpass reads the password from stdin, as typed.
            p = subprocess.run(
                command,
                cwd=ROOT,
                env=env,
                text=True,
                input=f"{macsim.ADMIN_PASSWORD}\n" if sudo_password else "",
                capture_output=True,
                timeout=900,
                start_new_session=True,
            )
        try:
            results = json.loads(p.stdout) if p.stdout.strip().startswith("{") else None
        except ValueError:
            results = None
        return ConvergeResult(
            code=p.returncode,
            output=p.stderr + p.stdout,
            results=results,
            calls=self.launchctl_calls()[calls_before:],
            spawns=self.spawns()[spawns_before:],
        )
