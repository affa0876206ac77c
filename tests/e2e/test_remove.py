"""remove.py on a real sandbox host: everything kitty-ops installed goes, models, app data and foreign things stay.

Each test runs on the session's converged sandbox and ends with deploy.py rebuilding the host,
healthy, as the next test expects it: first the default removal (`--dry` changes nothing, then
remove, then a second remove that changes nothing), then one asked to take the models and the
application's data too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import converge as sandbox_converge
from tasks.host import layout
from tasks.inference import llamacpp
from tasks.system import logs
from tests.e2e.conftest import NAME, Converge, converge, sandbox_config, ssh, wait_healthy

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FOREIGN_CONTAINER = f"{NAME}-foreign-remove"
# Something of the operator's in kitty-ops' own folder: the folder stays for it.
FOREIGN_FILE = "operator-notes.txt"


def remove(name: str, *args: str) -> Converge:
    """`pyinfra inventory.py remove.py` against the sandbox, as an admin laptop runs it."""
    env = {**os.environ, **sandbox_converge.sandbox_env(name), **sandbox_converge.QUIET_HF}
    command = [sys.executable, "-m", "pyinfra", "inventory.py", "remove.py", "-y", "--json"]
    command += ["--group-data", str(sandbox_converge.GROUP_DATA), *args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    try:
        results = __import__("json").loads(result.stdout) if result.stdout.strip() else None
    except ValueError:
        results = None
    return Converge(result.returncode, results, result.stdout + result.stderr)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def docker_names(kind: str, project: str) -> list[str]:
    """Containers (`ps -a`) or volumes of a compose project, by its label, on this machine's engine."""
    label = f"label=com.docker.compose.project={project}"
    command = ["docker", "ps", "-a", "--filter", label, "--format", "{{.Names}}"]
    if kind == "volume":
        command = ["docker", "volume", "ls", "--filter", label, "--format", "{{.Name}}"]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()


def exists(name: str, path: str) -> bool:
    return ssh(name, f"sudo test -e {path}", check=False).returncode == 0


def test_remove_takes_out_only_kitty_ops_own_keeps_models_and_app_data_then_deploy_rebuilds(sandbox, first_converge):
    cfg = sandbox_config()
    project = cfg.stack.project_name
    opt = cfg.paths.opt_dir
    q4_model = cfg.models[cfg.servers["q4"].model]
    model = f"{cfg.paths.models_dir}/{q4_model.dir}/{q4_model.files[0].name}"
    ports = {srv.port: f"server {name}" for name, srv in cfg.enabled_servers().items()}
    ports.update({s.port: f"stack {name}" for name, s in cfg.stack.services.items() if s.port})
    units = [layout.server_unit(name) for name in cfg.enabled_servers()]
    volumes = docker_names("volume", project)
    assert volumes, "the stack has volumes to keep"
    foreign_port = cfg.servers["q4"].port + 61
    # A llama-server kitty-ops did not start (a copy of its binary, on a port of its own), and a container.
    pid = ssh(
        sandbox,
        f"mkdir -p /tmp/foreign-remove && cp {llamacpp.binary(cfg)} /tmp/foreign-remove/llama-server || exit 1; "
        f"nohup /tmp/foreign-remove/llama-server -m {model} --port {foreign_port} --host 127.0.0.1 -c 256 "
        f"</dev/null >/tmp/foreign-remove/log 2>&1 & echo $!; echo notes | sudo tee {opt}/{FOREIGN_FILE} >/dev/null",
    ).stdout.strip()
    subprocess.run(["docker", "rm", "-f", FOREIGN_CONTAINER], capture_output=True)
    subprocess.run(
        ["docker", "run", "-d", "--name", FOREIGN_CONTAINER, "kitty-fixture-base:bookworm", "sleep", "900"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        try:
            wait_healthy(foreign_port)
        except AssertionError as error:
            log = ssh(sandbox, "tail -20 /tmp/foreign-remove/log", check=False).stdout
            raise AssertionError(f"{error}\n{log}") from error

        # Backups are never removed: one an earlier test took (test_backup_restore) stays in opt_dir.
        backup = layout.backup_dir(cfg)
        kept_backup = [backup.rpartition("/")[2]] if backup.startswith(f"{opt}/") and exists(sandbox, backup) else []
        planned = remove(sandbox, "--dry")
        assert planned.code == 0, planned.output[-4000:]
        assert "server q4: stop and remove (host taken out)" in planned.output
        assert "will keep: model files" in planned.output
        assert all(listening(port) for port in ports), "--dry stopped something"
        assert exists(sandbox, layout.llamacpp_dir(cfg))

        result = remove(sandbox)
        assert result.code == 0, result.output[-4000:]
        assert {f"Supervised programs | server {name}: stop and remove (host taken out)"
                for name in cfg.enabled_servers()} <= set(result.changed), result.changed  # fmt: skip
        # Nothing of kitty-ops' runs, listens, starts at boot or is left on disk.
        assert [f"{port} ({what})" for port, what in ports.items() if listening(port)] == []
        assert docker_names("container", project) == []
        left = ssh(sandbox, f"ls {layout.SYSTEMD_UNITS} | grep '^kitty-' || true").stdout.split()
        assert left == []
        for unit in units:
            assert ssh(sandbox, f"systemctl is-active {unit}", check=False).stdout.strip() != "active"
        assert not exists(sandbox, logs.LOGROTATE_CONF)
        for path in (
            layout.llamacpp_dir(cfg),
            layout.state_dir(cfg),
            f"{opt}/keys",
            f"{opt}/hf",
            layout.wait_script(cfg),
        ):
            assert not exists(sandbox, path), f"{path} is still there"
        assert ssh(sandbox, f"ls -A {opt}").stdout.split() == sorted([*kept_backup, FOREIGN_FILE])
        # Kept, and said where: the models, the app's folder and its volumes.
        assert exists(sandbox, model)
        assert exists(sandbox, f"{cfg.paths.kitty_root}/.env")
        assert sorted(docker_names("volume", project)) == sorted(volumes)
        assert f"kept: model files: {cfg.paths.models_dir}" in result.output
        assert f"kept: application data: {cfg.paths.kitty_root}" in result.output
        assert f"kept: {opt}: {FOREIGN_FILE} (not kitty-ops')" in result.output
        # The foreign ones live on.
        assert ssh(sandbox, f"kill -0 {pid}", check=False).returncode == 0
        wait_healthy(foreign_port, timeout=5)
        running = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", FOREIGN_CONTAINER],
                                 capture_output=True, text=True).stdout.strip()  # fmt: skip
        assert running == "true"

        again = remove(sandbox)
        assert again.code == 0, again.output[-4000:]
        assert again.changed == [], again.changed
    finally:
        ssh(sandbox, f"kill {pid}; sudo rm -f {opt}/{FOREIGN_FILE}", check=False)
        subprocess.run(["docker", "rm", "-f", FOREIGN_CONTAINER], capture_output=True)

    back = converge(sandbox)
    assert back.code == 0, back.output[-4000:]
    for server in cfg.enabled_servers().values():
        wait_healthy(server.port)
    # The stack came back on the volumes it kept.
    assert sorted(docker_names("volume", project)) == sorted(volumes)
    assert exists(sandbox, f"{layout.SYSTEMD_UNITS}/{units[0]}")


def test_asked_it_removes_the_models_and_the_app_data_too_and_deploy_fetches_and_rebuilds_them(sandbox, first_converge):
    cfg = sandbox_config()
    project = cfg.stack.project_name
    q4_model = cfg.models[cfg.servers["q4"].model]
    model = f"{cfg.paths.models_dir}/{q4_model.dir}/{q4_model.files[0].name}"
    assert docker_names("volume", project) and exists(sandbox, model)

    result = remove(sandbox, "--data", "remove_models=true", "--data", "remove_app_data=true")
    assert result.code == 0, result.output[-4000:]
    assert f"Application stack | docker compose down of project {project} and its volumes" in result.changed
    assert docker_names("container", project) == [] and docker_names("volume", project) == []
    for path in (model, f"{cfg.paths.models_dir}/{q4_model.dir}/.kitty", cfg.paths.kitty_root, cfg.paths.logs_dir):
        assert not exists(sandbox, path), f"{path} is still there"
    assert "kept: model files" not in result.output and "kept: application data" not in result.output
    again = remove(sandbox, "--data", "remove_models=true", "--data", "remove_app_data=true")
    assert again.code == 0 and again.changed == [], again.changed

    back = converge(sandbox)
    assert back.code == 0, back.output[-4000:]
    for server in cfg.enabled_servers().values():
        wait_healthy(server.port)
    assert exists(sandbox, model) and exists(sandbox, f"{cfg.paths.kitty_root}/.env")
    assert docker_names("volume", project)
