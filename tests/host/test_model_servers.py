"""Model servers (manual steps 3.3-3.6): one test per enabled server, named after it.

Each one listens on its port, answers /health, lists its alias on /v1/models,
answers a short chat completion, and its supervisor job (systemd unit or launchd daemon) is running without a
crash loop.
"""

import pytest

from tasks.inference import servers as server_tasks
from tests.host import checks

pytestmark = pytest.mark.inference


def base_url(kitty, server) -> str:
    return server_tasks.health_url(kitty.servers[server]).removesuffix("/health")


def test_model_server_listens_on_its_port(host, kitty, server):
    port = kitty.servers[server].port
    problem = checks.listening(host, port)
    assert problem is None, f"model server {server}: {problem}"


def test_model_server_health_is_ok(host, kitty, server):
    problem = checks.server_health(host, server_tasks.health_url(kitty.servers[server]))
    assert problem is None, f"model server {server}: {problem}"


def test_model_server_lists_its_alias(host, kitty, server):
    srv = kitty.servers[server]
    problem = checks.lists_alias(host, base_url(kitty, server), srv.alias, key_file=srv.api_key_file)
    assert problem is None, f"model server {server}: {problem}"


def test_model_server_answers_a_chat_completion(host, kitty, server):
    srv = kitty.servers[server]
    problem = checks.answers_a_chat(host, base_url(kitty, server), srv.alias, key_file=srv.api_key_file)
    assert problem is None, f"model server {server}: {problem}"


def test_model_server_job_runs_without_crash_loop(host, kitty, server):
    problem = checks.supervisor_job(host, kitty, server)
    assert problem is None, f"model server {server}: {problem}"
