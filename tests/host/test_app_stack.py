"""The application stack (manual phase 4 and 6): one test per service, named after it.

Each service with a port listens on it; each answers its health check (HTTP
on the port, Redis PING and Postgres SELECT 1 inside their containers, or a
running and healthy container); the manual's end-to-end query through the
brain runs when kitty_verify.query is on. Skipped when kitty_stack is disabled.
"""

import pytest

from tests.host import checks

pytestmark = pytest.mark.application


@pytest.fixture(scope="module")
def engine(host, kitty):
    return checks.docker(host, kitty)


def test_stack_service_listens_on_its_port(host, kitty, service):
    port = kitty.stack.services[service].port
    if port is None:
        pytest.skip(f"stack service {service} publishes no port")
    problem = checks.listening(host, port)
    assert problem is None, f"stack service {service}: {problem}"


def test_stack_service_is_healthy(host, kitty, service, engine):
    spec = kitty.stack.services[service]
    if spec.health and spec.health.startswith("/"):
        problem = checks.http_ok(host, f"http://127.0.0.1:{spec.port}{spec.health}")
    elif spec.health == "redis":
        problem = checks.redis_ping(host, engine, service)
    elif spec.health == "postgres":
        problem = checks.postgres_select(host, engine, service)
    else:
        problem = checks.container_running(host, engine, service)
    assert problem is None, f"stack service {service}: {problem}"


def test_end_to_end_query_through_the_brain(host, kitty):
    if not kitty.stack.enabled:
        pytest.skip("kitty_stack.enabled is False: no application stack to query")
    if not kitty.verify.query:
        pytest.skip("kitty_verify.query is off (it runs a real model query)")
    name = kitty.verify.query_service
    url = f"http://127.0.0.1:{kitty.stack.services[name].port}/api/query"
    problem = checks.query(host, url, kitty.verify.query_timeout)
    assert problem is None, f"end-to-end query through {name}: {problem}"
