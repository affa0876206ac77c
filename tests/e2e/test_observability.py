"""Seeing the sandbox host: a real Prometheus scrapes every server through the target file the deploy
writes, and drops a disabled one at the next converge; a log filled past its size is rotated by logrotate
while its server keeps writing to the live file and stays healthy.

Prometheus is Debian's own (the `prometheus` package, 2.42), run inside the sandbox host (it shares the
sandbox's loopback, where the servers listen and where the deploy wrote the file), started by this test
and stopped by its PID.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tasks.host import layout
from tasks.inference import metrics
from tests.e2e.conftest import converge, sandbox_config, sandbox_data, ssh, wait_healthy

pytestmark = pytest.mark.e2e

PROM_PORT = 19190
PROM_DIR = "/tmp/kitty-e2e-prometheus"


def prometheus_binary(tmp_path: Path) -> Path:
    """Debian's prometheus: installed, or unpacked from its .deb (apt-get download, no install)."""
    found = shutil.which("prometheus")
    if found:
        return Path(found)
    debs = sorted(Path("/var/cache/apt/archives").glob("prometheus_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", "prometheus"], cwd=tmp_path, capture_output=True, check=False)
        debs = sorted(tmp_path.glob("prometheus_*.deb"))
    if not debs:
        pytest.skip("no Debian prometheus package: apt-get install prometheus")
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tmp_path / "deb")], check=True)
    return tmp_path / "deb" / "usr" / "bin" / "prometheus"


def active_targets() -> list[dict]:
    body = httpx.get(f"http://127.0.0.1:{PROM_PORT}/api/v1/targets?state=active", timeout=5).json()
    return body["data"]["activeTargets"]


def wait_for(what: str, predicate, timeout: float = 60):
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = active_targets()
            if predicate(last):
                return last
        except (httpx.HTTPError, ValueError, KeyError) as error:
            last = error
        time.sleep(1)
    raise AssertionError(f"Prometheus: {what} not seen in {timeout}s; last: {last}")


@pytest.fixture
def prometheus(sandbox, first_converge, tmp_path):
    binary = prometheus_binary(tmp_path)
    cfg = sandbox_config()
    ssh(sandbox, f"rm -rf {PROM_DIR} && mkdir -p {PROM_DIR}")
    subprocess.run(["docker", "cp", str(binary), f"{sandbox}:{PROM_DIR}/prometheus"], check=True)
    config = (
        "global: {scrape_interval: 1s, evaluation_interval: 5s}\n"
        "scrape_configs:\n"
        "  - job_name: kitty-llama\n"
        f"    file_sd_configs: [{{files: [{json.dumps(layout.metrics_targets(cfg))}], refresh_interval: 2s}}]\n"
    )
    ssh(sandbox, f"cat > {PROM_DIR}/prometheus.yml <<'EOF'\n{config}EOF")
    started = ssh(
        sandbox,
        f"cd {PROM_DIR} || exit 1; nohup ./prometheus --config.file=prometheus.yml --storage.tsdb.path=data "
        f"--web.listen-address=127.0.0.1:{PROM_PORT} >prometheus.log 2>&1 </dev/null & echo $!",
    )
    pid = int(started.stdout.split()[-1])
    yield cfg
    ssh(sandbox, f"kill {pid}; sleep 1; cat {PROM_DIR}/prometheus.log | tail -5", check=False)


def test_prometheus_scrapes_every_server_and_drops_a_disabled_one(sandbox, prometheus, tmp_path):
    cfg = prometheus
    wanted = {name: srv for name, srv in cfg.enabled_servers().items() if srv.metrics}
    assert len(wanted) >= 2

    def all_up(targets):
        up = {t["labels"].get("server"): t for t in targets if t["health"] == "up"}
        return set(up) == set(wanted)

    targets = wait_for(f"{sorted(wanted)} up", all_up)
    for target in targets:
        name = target["labels"]["server"]
        assert target["labels"]["model"] == wanted[name].model
        assert target["labels"]["host"], "the host label is the host's node name"
        assert target["scrapeUrl"] == f"http://{metrics.scrape_address(cfg, wanted[name])}/metrics"
    # Prometheus stored the model's own series, per server.
    query = httpx.get(
        f"http://127.0.0.1:{PROM_PORT}/api/v1/query", params={"query": "llamacpp:n_decode_total"}, timeout=5
    ).json()
    assert {r["metric"]["server"] for r in query["data"]["result"]} == set(wanted)

    servers = sandbox_data()["kitty_servers"]
    servers["summary"]["enabled"] = False
    result = converge(sandbox, tmp_path, overrides={"kitty_servers": servers})
    try:
        assert result.code == 0, result.output[-3000:]
        assert "Metrics | Prometheus targets of the model servers" in result.changed
        wait_for("summary dropped", lambda ts: {t["labels"].get("server") for t in ts} == set(wanted) - {"summary"})
    finally:
        back = converge(sandbox)
        assert back.code == 0, back.output[-3000:]
    wait_for("summary back", all_up)


def test_a_full_log_is_rotated_while_its_server_keeps_writing_and_stays_healthy(sandbox, first_converge):
    cfg = sandbox_config()
    log = layout.server_log(cfg, "q4")
    unit = layout.server_unit("q4")
    port = cfg.servers["q4"].port
    pid_before = ssh(sandbox, f"systemctl show -p MainPID --value {unit}").stdout.strip()
    size = cfg.logs.max_size_mb
    # Past the configured size: the next logrotate run must rotate it.
    ssh(sandbox, f"sudo sh -c 'head -c {size + 1}M /dev/zero | tr \"\\\\000\" x >> {log}; echo >> {log}'")
    ran = ssh(sandbox, "sudo logrotate -v /etc/logrotate.d/kitty 2>&1", check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    listing = ssh(sandbox, f"ls {log}* && stat -c %s {log}").stdout.split()
    assert f"{log}.1.gz" in listing or f"{log}.1" in listing, listing
    assert int(listing[-1]) < 1024 * 1024, f"{log} was not truncated: {listing[-1]} bytes"
    # The server writes on, to the live file, from its (new) start: no hole where the old content was.
    reply = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8, "temperature": 0},
        timeout=60,
    )
    assert reply.status_code == 200
    time.sleep(1)
    live = ssh(sandbox, f"sudo cat {log} | tr -d '\\000' | wc -c; stat -c %s {log}").stdout.split()
    assert int(live[1]) > 0, "the server wrote nothing to the live log after the rotation"
    assert live[0] == live[1], f"{log} has a hole of NUL bytes: the server does not append ({live})"
    wait_healthy(port)
    assert ssh(sandbox, f"systemctl show -p MainPID --value {unit}").stdout.strip() == pid_before
