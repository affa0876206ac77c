"""The application's .env: values, secrets and where they come from, and the rules on them."""

import copy

import pytest
from pyinfra.api.exceptions import DeployError

from tasks import config
from tasks.app import compose, secrets
from tests.plan.harness import group_data

DEFAULTS = group_data()


def cfg(**changes) -> config.KittyConfig:
    data = copy.deepcopy(DEFAULTS)
    data["kitty_stack"].update(changes)
    return config.load(data)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_env_has_group_data_values_ports_and_model_urls_quoted():
    text = secrets.render_env(cfg(), {})
    assert "OFFLINE_MODE='true'" in lines(text)
    assert "BRAIN_PORT='8000'" in lines(text) and "REDIS_PORT='6379'" in lines(text)
    assert "LLAMACPP_Q4_HOST='http://host.docker.internal:8083'" in lines(text)
    assert "LLAMACPP_F16_HOST='http://host.docker.internal:8082'" in lines(text)
    assert not any("API_KEY" in line for line in lines(text))


def test_model_host_is_per_host_and_disabled_servers_get_no_url():
    data = copy.deepcopy(DEFAULTS)
    data["kitty_stack"]["model_host"] = "172.17.0.1"
    data["kitty_servers"]["vision"]["enabled"] = False
    text = secrets.render_env(config.load(data), {})
    assert "LLAMACPP_Q4_HOST='http://172.17.0.1:8083'" in lines(text)
    assert not any(line.startswith("LLAMACPP_VISION_HOST") for line in lines(text))


def test_a_bcrypt_hash_is_kept_literal():
    hashed = "$2b$12$abcdefghijklmnopqrstuuH0oQ1bq0t7f6b2Jc4A8n5m5Yb6xA0bS"
    assert f"ADMIN_USERS='{hashed}'" in lines(secrets.render_env(cfg(), {"ADMIN_USERS": hashed}))


def test_secrets_come_from_the_environment_before_the_file(tmp_path, monkeypatch):
    (tmp_path / "secrets.env").write_text("# operator secrets\nOPENAI_API_KEY=from-file\nexport ZOO_API_KEY='zoo'\n")
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    monkeypatch.delenv("ZOO_API_KEY", raising=False)
    monkeypatch.delenv("ADMIN_USERS", raising=False)
    values = secrets.secret_values(cfg().stack, tmp_path)
    assert values["OPENAI_API_KEY"] == "from-env"
    assert values["ZOO_API_KEY"] == "zoo"
    assert "ADMIN_USERS" not in values


def test_only_listed_secrets_are_taken(tmp_path, monkeypatch):
    (tmp_path / "secrets.env").write_text("UNLISTED=x\n")
    monkeypatch.setenv("ANOTHER_UNLISTED", "y")
    listed = ["OPENAI_API_KEY", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"]  # the S3 keys: kitty_backup needs them
    assert secrets.secret_values(cfg(secrets=listed).stack, tmp_path).keys() <= set(listed)


def test_a_secret_with_a_quote_is_refused_by_name_only(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-it's-secret")
    with pytest.raises(DeployError, match="secret OPENAI_API_KEY") as error:
        secrets.secret_values(cfg().stack, tmp_path)
    assert "sk-it" not in str(error.value)


def test_a_malformed_secrets_file_names_its_line(tmp_path):
    (tmp_path / "secrets.env").write_text("OPENAI_API_KEY=x\nnot a pair\n")
    with pytest.raises(DeployError, match=r"secrets.env:2: expected NAME=value"):
        secrets.secret_values(cfg().stack, tmp_path)


def test_override_adds_extra_hosts_to_every_configured_service():
    override = compose.render_override(cfg(extra_hosts={"host.docker.internal": "host-gateway"}))
    assert '"brain": {\n      "extra_hosts": [\n        "host.docker.internal:host-gateway"' in override


# --- The schema's rules ----------------------------------------------------------


def test_a_secret_looking_env_name_is_refused():
    with pytest.raises(config.ConfigError, match="'OPENAI_API_KEY' looks like a secret"):
        cfg(env={"OPENAI_API_KEY": "sk-1"})


def test_an_env_value_with_a_newline_is_refused():
    with pytest.raises(
        config.ConfigError, match=r"kitty_stack.env.GREETING: holds a newline or control character \(U\+000A\)"
    ):
        cfg(env={"GREETING": "a\nINJECTED=1"})


def test_an_env_value_ending_in_a_backslash_is_refused():
    # compose's dotenv parser takes `\'` as an escaped quote and reads on into the next line.
    with pytest.raises(config.ConfigError, match="GREETING': a .env value cannot hold a single quote, a backslash"):
        cfg(env={"GREETING": "ends in \\"})


def test_derived_names_cannot_be_set_by_hand():
    with pytest.raises(config.ConfigError, match="BRAIN_PORT: derived from kitty_stack.services"):
        cfg(env={"BRAIN_PORT": "9000"})
    with pytest.raises(config.ConfigError, match="LLAMACPP_Q4_HOST: derived from kitty_servers"):
        cfg(env={"LLAMACPP_Q4_HOST": "http://x:1"})


def test_a_name_is_either_env_or_secret():
    with pytest.raises(config.ConfigError, match="GREETING: also listed in kitty_stack.secrets"):
        cfg(env={"GREETING": "hi"}, secrets=["GREETING"])


def test_an_http_health_check_needs_a_port():
    with pytest.raises(config.ConfigError, match="HTTP check: give the service's port"):
        cfg(services={"brain": {"health": "/health"}})


def test_an_unknown_probe_is_refused():
    with pytest.raises(config.ConfigError, match="services.brain.health"):
        cfg(services={"brain": {"port": 8000, "health": "mysql"}})


def test_an_unknown_runtime_is_refused():
    with pytest.raises(config.ConfigError, match="stack.runtime"):
        cfg(runtime="podman")
