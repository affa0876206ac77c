"""A stack service on the host's network (kitty_stack.services.<name>.host_network): the compose
override says so, the container's published ports are dropped, and a Mac refuses it (its engine's
host network is the Linux VM's, not the Mac's)."""

import copy

import pytest
import yaml
from pyinfra.api.exceptions import PyinfraError

from tasks import config
from tasks.app import compose
from tests.plan import hosts
from tests.plan.harness import plan
from tests.plan.test_stack import STACK_OPS, names, stack_data, uploaded

OVERRIDE = "/Users/Shared/Coding/KITT/.kitty-ops.compose.json"


class ComposeLoader(yaml.SafeLoader):
    """YAML as compose reads it: `!reset` is compose's own tag (a value the override removes)."""


ComposeLoader.add_constructor("!reset", lambda loader, node: ("reset", loader.construct_sequence(node)))


def brain_on_host_network(**changes) -> dict:
    data = stack_data(**changes)
    data["kitty_stack"]["services"] = copy.deepcopy(data["kitty_stack"]["services"])
    data["kitty_stack"]["services"]["brain"]["host_network"] = True
    return data


def test_a_host_network_service_gets_network_mode_host_and_no_published_ports():
    data = brain_on_host_network()
    cfg = config.load({**hosts.DEFAULTS, **data})
    override = yaml.load(compose.render_override(cfg), Loader=ComposeLoader)
    assert override == {
        "services": {
            "brain": {
                "network_mode": "host",
                "ports": ("reset", []),
                "environment": {"KITTY_HOST_NETWORK": "1"},
            }
        }
    }


def test_extra_hosts_still_reach_every_service_beside_the_host_network():
    data = brain_on_host_network(extra_hosts={"host.docker.internal": "host-gateway"})
    override = yaml.load(compose.render_override(config.load({**hosts.DEFAULTS, **data})), Loader=ComposeLoader)
    services = override["services"]
    assert all(s["extra_hosts"] == ["host.docker.internal:host-gateway"] for s in services.values())
    assert services["brain"]["network_mode"] == "host" and "network_mode" not in services["redis"]


def test_linux_writes_the_override_and_compose_reads_it():
    data = brain_on_host_network()
    result = plan(hosts.linux_converged(), data=data)
    assert names(result) == ["Compose override (host network)", *STACK_OPS]
    (up,) = result.op("docker compose up").commands
    assert f"-f {OVERRIDE} --env-file" in up
    text = uploaded(hosts.linux_converged(), "Compose override (host network)", data)[OVERRIDE]
    assert '"network_mode": "host"' in text and '"ports": !reset []' in text


def test_a_mac_refuses_it_naming_the_field_and_why():
    # runtime auto (colima on a Mac): only the platform can tell.
    with pytest.raises(PyinfraError, match=r"kitty_stack.services.brain.host_network: Docker's host network on a Mac"):
        plan(hosts.macos_converged(), data=brain_on_host_network())


@pytest.mark.parametrize("runtime", ["colima", "docker-desktop", "orbstack"])
def test_the_schema_refuses_it_with_a_mac_runtime(runtime):
    data = {**hosts.DEFAULTS, **brain_on_host_network(runtime=runtime)}
    with pytest.raises(config.ConfigError, match=r"kitty_stack.services.brain.host_network: .*the VM's"):
        config.load(data)


def test_no_host_network_and_no_extra_hosts_means_no_override():
    cfg = config.load(hosts.DEFAULTS)
    assert not compose.needs_override(cfg)
