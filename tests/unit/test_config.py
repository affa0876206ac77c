"""Each validation rule of the host data: a bad value in, a message naming the field out."""

import pytest

from tasks import config
from tests.unit.data import DEFAULTS, host_data


def error_of(data) -> str:
    with pytest.raises(config.ConfigError) as raised:
        config.load(data)
    return str(raised.value)


def test_the_manuals_host_is_valid():
    cfg = config.load(DEFAULTS)
    assert {name: server.port for name, server in cfg.servers.items()} == {
        "q4": 8083,
        "f16": 8082,
        "summary": 8085,
        "vision": 8086,
    }
    assert len(cfg.models["llama-3.3-70b-f16"].files) == 4
    assert all(server.host == "127.0.0.1" for server in cfg.servers.values())


def test_unpinned_values_are_visible_in_the_data():
    cfg = config.load(DEFAULTS)
    unpinned = [name for name, model in cfg.models.items() if not model.pinned]
    assert unpinned and all("not given by the operations manual" in cfg.models[name].note for name in unpinned)
    assert cfg.model_policy.allow_unpinned is False


def test_two_servers_on_one_port():
    message = error_of(host_data(kitty_servers__f16__port=8083))
    assert "kitty_servers.f16.port: port 8083 is already used by kitty_servers.q4.port" in message


def test_a_server_port_clashing_with_an_app_service():
    message = error_of(host_data(kitty_servers__q4__port=8000))
    assert "kitty_stack.services.brain.port: port 8000 is already used by kitty_servers.q4.port" in message


def test_a_disabled_server_does_not_hold_its_port():
    data = host_data(kitty_servers__f16__port=8083)
    data["kitty_servers"]["f16"]["enabled"] = False
    config.load(data)


def test_unknown_key_inside_a_section():
    message = error_of(host_data(kitty_servers__q4__ctx_sise=4096))
    assert "kitty_servers.q4.ctx_sise: unknown setting (a typo?)" in message


def test_unknown_top_level_kitty_key():
    data = host_data()
    data["kitty_server"] = {}
    assert "kitty_server: unknown setting" in error_of(data)


def test_mmproj_on_a_model_that_is_not_multimodal():
    message = error_of(host_data(kitty_servers__q4__mmproj="gemma-3-27b-mmproj"))
    assert "kitty_servers.q4.mmproj: model 'athene-v2-agent-q4' is not multimodal" in message


def test_vision_server_without_mmproj():
    message = error_of(host_data(kitty_servers__vision__mmproj=None))
    assert "kitty_servers.vision.mmproj: vision model 'gemma-3-27b-vision' needs an mmproj file" in message


@pytest.mark.parametrize("field", ["ctx_size", "threads", "parallel"])
@pytest.mark.parametrize("value", [0, -4])
def test_non_positive_sizes(field, value):
    message = error_of(host_data(**{f"kitty_servers__q4__{field}": value}))
    assert f"kitty_servers.q4.{field}: Input should be greater than 0" in message


@pytest.mark.parametrize("port", [0, 65536, 99999])
def test_port_out_of_range(port):
    message = error_of(host_data(kitty_servers__summary__port=port))
    assert "kitty_servers.summary.port: Input should be" in message


def test_server_naming_an_undefined_model():
    message = error_of(host_data(kitty_servers__q4__model="athene-v3"))
    assert "kitty_servers.q4.model: no model named 'athene-v3' is defined in kitty_models" in message


def test_server_naming_an_undefined_mmproj():
    message = error_of(host_data(kitty_servers__vision__mmproj="mmproj-x"))
    assert "kitty_servers.vision.mmproj: no model named 'mmproj-x' is defined" in message


def test_a_branch_revision_is_not_a_pin_until_the_lock_resolves_it():
    # A branch or tag moves: only a commit (given, or from the models lock) pins a model.
    data = host_data()
    data["kitty_models"]["hermes-summary"]["revision"] = "main"
    assert not config.load(data).models["hermes-summary"].pinned
    data["kitty_models"]["hermes-summary"]["commit"] = "not-a-sha"
    assert "kitty_models.hermes-summary.commit: String should match pattern" in error_of(data)


def test_every_bad_field_is_listed_at_once():
    message = error_of(host_data(kitty_servers__q4__ctx_size=0, kitty_servers__f16__threads=0))
    assert "kitty_servers.q4.ctx_size" in message and "kitty_servers.f16.threads" in message


def test_errors_surface_through_pyinfra_as_a_deploy_error():
    from pyinfra.api.exceptions import DeployError

    assert issubclass(config.ConfigError, DeployError)


def test_a_renamed_homebrew_formula_is_refused_with_its_new_name():
    # `brew list` reports `hf`: the old name would be installed again on every converge.
    message = error_of(host_data(kitty_packages__brew=["git", "huggingface-cli"]))
    assert "kitty_packages.brew: renamed Homebrew formulae ('huggingface-cli' is now 'hf')" in message


def test_the_default_formulae_use_current_names():
    brew = config.load(DEFAULTS).packages.brew
    assert "hf" in brew and not set(brew) & set(config.RENAMED_FORMULAE)


def test_filevault_policy_defaults_to_warn_and_takes_only_known_values():
    assert config.load(DEFAULTS).macos.filevault == "warn"
    assert config.load(host_data(kitty_macos__filevault="refuse")).macos.filevault == "refuse"
    assert "kitty_macos.filevault" in error_of(host_data(kitty_macos__filevault="off"))
