#!/usr/bin/env python3
"""The main job where no Mac is at hand: converge a local sandbox host over SSH, then verify it.

    python sandbox/converge.py [--fresh] [--name kitty-sb] [--ssh-port 2222] [-- extra pyinfra args]

Starts the sandbox host if it is not running (`--fresh` replaces it with a
new one), runs `pyinfra inventory.py deploy.py` against it exactly as an admin
laptop runs it against a Mac, then the host test suite (tests/host) over SSH.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SANDBOX = [sys.executable, str(ROOT / "sandbox" / "sandbox.py")]
PYINFRA = [sys.executable, "-m", "pyinfra", "inventory.py", "deploy.py"]
GROUP_DATA = ROOT / "sandbox" / "group_data"
# hf runs on the sandbox, but keep the controller quiet too.
QUIET_HF = {"HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1"}


def sandbox_env(name: str) -> dict[str, str]:
    lines = (ROOT / ".sandbox" / name / "env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def is_running(name: str) -> bool:
    result = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() == "true" and (ROOT / ".sandbox" / name / "env").exists()


HF_MIRROR = [sys.executable, str(ROOT / "sandbox" / "hf-mirror.py")]


def hf_mirror_port() -> int:
    """18090 + KITTY_SANDBOX_PORT_OFFSET (sandbox/group_data): a mirror per sandbox port offset."""
    endpoint = runpy.run_path(str(GROUP_DATA / "all.py"))["kitty_model_policy"]["hf_endpoint"]
    return int(endpoint.rsplit(":", 1)[1])


def hf_mirror_state(port: int | None = None) -> Path:
    """The run state of the mirror on `port` (sandbox/hf-mirror.py): front.log, faults.json, pids."""
    return ROOT / ".sandbox" / "hf" / str(port or hf_mirror_port())


def prepare_mirrors() -> None:
    """The offline stand-ins for upstream: git mirrors of llama.cpp and of a fixture KITTY
    application (/srv/mirrors in the sandbox), and a Hugging Face mirror on loopback,
    shared with the sandbox's network, on this port offset's port."""
    subprocess.run(["bash", str(ROOT / "sandbox" / "make-llama-mirror.sh")], check=True)
    subprocess.run(["bash", str(ROOT / "sandbox" / "app-fixture" / "make-app-mirror.sh")], check=True)
    subprocess.run([*HF_MIRROR, "prepare"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*HF_MIRROR, "serve", "--port", str(hf_mirror_port())], check=True)


def stop_mirrors() -> None:
    subprocess.run([*HF_MIRROR, "stop", "--port", str(hf_mirror_port())], check=False)


def ensure_sandbox(name: str, port: int, fresh: bool) -> dict[str, str]:
    prepare_mirrors()
    if fresh or not is_running(name):
        subprocess.run([*SANDBOX, "start", "--name", name, "--ssh-port", str(port), "--replace"], check=True)
    return sandbox_env(name)


def converge(name: str, *args: str, log: Path | None = None) -> tuple[int, dict | None]:
    """Run the deploy against the sandbox. Returns pyinfra's exit code and its --json results."""
    env = {**os.environ, **sandbox_env(name), **QUIET_HF}
    command = [
        *PYINFRA,
        "-y",
        "--group-data",
        str(GROUP_DATA),
        *args,
    ]
    json_mode = "--json" in args
    result = subprocess.run(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE if json_mode else None, stderr=None, text=True
    )
    if log is not None and json_mode:
        log.write_text(result.stdout)
    results = json.loads(result.stdout) if json_mode and result.stdout.strip() else None
    return result.returncode, results


def verify(name: str, *args: str) -> int:
    """The host test suite (tests/host) against the sandbox, over SSH."""
    env = sandbox_env(name)
    user_host = env["KITTY_HOSTS"].split(",")[0]
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(ROOT / "tests" / "host"),
        f"--hosts=paramiko://{user_host}",
        f"--ssh-identity-file={env['KITTY_SSH_KEY']}",
        *args,
    ]
    return subprocess.run(command, cwd=ROOT, env={**os.environ, "KITTY_GROUP_DATA": str(GROUP_DATA)}).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="kitty-sb")
    parser.add_argument("--ssh-port", type=int, default=2222)
    parser.add_argument("--fresh", action="store_true", help="replace the sandbox with a brand-new one first")
    parser.add_argument("pyinfra_args", nargs="*", help="passed to pyinfra (after --)")
    options = parser.parse_args(argv)
    ensure_sandbox(options.name, options.ssh_port, options.fresh)
    code, _ = converge(options.name, *options.pyinfra_args)
    if code != 0:
        print(f"converge failed (exit {code})", file=sys.stderr)
        return code
    return verify(options.name)


if __name__ == "__main__":
    sys.exit(main())
