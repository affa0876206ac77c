"""Model server metrics: each enabled server with `metrics` on answers GET /metrics with llama-server's series,
and the Prometheus target file the deploy wrote names it with its labels."""

import json
import shlex

import pytest

from tasks.host import layout
from tasks.inference import metrics
from tasks.inference import servers as server_tasks
from tests.host import checks

pytestmark = pytest.mark.inference

# Series llama-server b11434 always exports with --metrics (tools/server/server-task.cpp).
SERIES = ("llamacpp:prompt_tokens_total", "llamacpp:tokens_predicted_total", "llamacpp:n_decode_total")


def test_model_server_metrics_carry_the_model_series(host, kitty, server):
    srv = kitty.servers[server]
    if not srv.metrics:
        pytest.skip(f"kitty_servers.{server}.metrics is off")
    url = server_tasks.health_url(srv).removesuffix("/health") + "/metrics"
    code, body = checks.http_get(host, url, key_file=srv.api_key_file)
    assert code == "200", f"model server {server}: {url} answers {code}: {body.strip()[:200]}"
    missing = [name for name in SERIES if not any(line.startswith(name + " ") for line in body.splitlines())]
    assert not missing, f"model server {server}: {url} lacks {missing}"


def test_model_server_is_a_prometheus_target(host, kitty, server):
    srv = kitty.servers[server]
    if not srv.metrics:
        pytest.skip(f"kitty_servers.{server}.metrics is off")
    path = layout.metrics_targets(kitty)
    listed = host.run(f"cat {shlex.quote(path)}")
    assert listed.rc == 0, f"model server {server}: no target file {path}"
    entries = {e["labels"]["server"]: e for e in json.loads(listed.stdout)}
    assert server in entries, f"model server {server}: not in {path}"
    assert entries[server]["targets"] == [metrics.scrape_address(kitty, srv)]
    assert entries[server]["labels"]["model"] == srv.model
