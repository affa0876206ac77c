"""The llama-server command line of each model server, and the config rules that keep it sound."""

import copy

import pytest

from tasks import config
from tasks.config import flags
from tasks.inference import server_args
from tests.unit.data import DEFAULTS

BINARY = "/opt/kitty/current/bin/llama-server"
MODELS = "/Users/Shared/Coding/models"


def load(**server_changes):
    """The default host data with `{server: {field: value}}` changes applied."""
    data = copy.deepcopy(DEFAULTS)
    for name, changes in server_changes.items():
        data["kitty_servers"][name].update(changes)
    return config.load(data)


def argv(cfg, name, models_dir=MODELS):
    return server_args.arguments(cfg, name, cfg.servers[name], BINARY, models_dir)


def value_of(args, flag):
    assert args.count(flag) == 1, f"{flag} given {args.count(flag)} times in {args}"
    return args[args.index(flag) + 1]


def test_q4_runs_with_every_flag_of_the_manual():
    assert argv(load(), "q4") == [
        BINARY,
        "--host",
        "127.0.0.1",
        "--port",
        "8083",
        "--alias",
        "kitty-q4",
        "--model",
        f"{MODELS}/athene-v2-agent/Athene-V2-Agent-Q4_K_M.gguf",
        "--ctx-size",
        "16384",
        "--threads",
        "20",
        "--batch-size",
        "4096",
        "--ubatch-size",
        "1024",
        "--parallel",
        "4",
        "--n-gpu-layers",
        "999",
        "--flash-attn",
        "on",
        # Read into its buffers, not mmap'd (README, Model load speed).
        "--load-mode",
        "none",
        "--metrics",
        "--jinja",
        # It asks for GPU layers: its load log must say where they went (tasks/supervise/offload.py).
        "--log-verbosity",
        "4",
    ]


def test_a_split_model_is_given_its_first_shard_whatever_the_listed_order():
    data = copy.deepcopy(DEFAULTS)
    data["kitty_models"]["llama-3.3-70b-f16"]["files"].reverse()
    args = argv(config.load(data), "f16")
    assert value_of(args, "--model").endswith("/Llama-3.3-70B-Instruct-f16-00001-of-00004.gguf")
    assert value_of(args, "--model").startswith(f"{MODELS}/llama-3.3-70b-instruct-f16/")
    assert sum(arg.endswith(".gguf") for arg in args) == 1


def test_optional_flags_left_unset_are_not_passed():
    args = argv(load(), "summary")
    assert value_of(args, "--batch-size") == "1024"
    assert "--ubatch-size" not in args and "--flash-attn" not in args and "--mmproj" not in args


def test_jinja_false_is_said_explicitly_because_newer_builds_default_to_on():
    assert "--no-jinja" in argv(load(), "summary")
    assert "--jinja" not in argv(load(), "summary")
    assert "--no-jinja" not in argv(load(), "q4")


def test_vision_server_gets_its_projector():
    args = argv(load(), "vision")
    assert value_of(args, "--mmproj") == f"{MODELS}/gemma-3-27b-it-GGUF/mmproj-google_gemma-3-27b-it-bf16.gguf"
    assert value_of(args, "--model") == f"{MODELS}/gemma-3-27b-it-GGUF/google_gemma-3-27b-it-Q4_K_M.gguf"


def test_models_dir_argument_wins_over_the_configured_one():
    args = argv(load(), "q4", models_dir="/srv/models/")
    assert value_of(args, "--model") == "/srv/models/athene-v2-agent/Athene-V2-Agent-Q4_K_M.gguf"


def test_every_server_binds_loopback_unless_configured():
    # Beyond loopback only with a key (tests/unit/test_hardening_schema.py refuses it without).
    cfg = load(q4={"host": "0.0.0.0", "api_key_file": "/opt/kitty/secrets/q4.key"})
    assert value_of(argv(cfg, "q4"), "--host") == "0.0.0.0"
    assert all(value_of(argv(cfg, name), "--host") == "127.0.0.1" for name in ("f16", "summary", "vision"))


def test_api_key_goes_by_file_only():
    args = argv(load(q4={"api_key_file": "/opt/kitty/secrets/llama-q4.key"}), "q4")
    assert value_of(args, "--api-key-file") == "/opt/kitty/secrets/llama-q4.key"
    assert "--api-key" not in args
    assert "--api-key-file" not in argv(load(), "q4")


def test_extra_args_come_last_as_given():
    args = argv(load(q4={"extra_args": ["--no-warmup", "--cache-type-k", "q8_0"]}), "q4")
    assert args[-3:] == ["--no-warmup", "--cache-type-k", "q8_0"]


def test_every_flag_a_field_sets_is_guarded_against_repetition_in_extra_args():
    cfg = load(q4={"api_key_file": "/k"}, vision={"flash_attn": "auto", "batch_size": 8, "ubatch_size": 8})
    emitted = {arg for name in cfg.servers for arg in argv(cfg, name) if arg.startswith("-")}
    assert emitted <= set(flags.MANAGED_FLAGS)


# --- Validation rules added for the command line ---------------------------


def error_of(**server_changes) -> str:
    with pytest.raises(config.ConfigError) as raised:
        load(**server_changes)
    return str(raised.value)


@pytest.mark.parametrize("arg", ["--port", "-np", "--n_gpu_layers", "--model=/x.gguf", "--no-jinja"])
def test_extra_args_may_not_repeat_a_field(arg):
    message = error_of(q4={"extra_args": [arg, "1"]})
    field = flags.MANAGED_FLAGS[flags.flag_name(arg)]
    assert f"kitty_servers.q4.extra_args: {arg!r} is set by the field {field!r}" in message


@pytest.mark.parametrize("arg", ["--api-key", "--api-key=sk-123"])
def test_an_api_key_on_the_command_line_is_refused(arg):
    message = error_of(q4={"extra_args": [arg]})
    assert "kitty_servers.q4.extra_args: --api-key would put the key in a world-readable plist" in message
    assert "sk-123" not in message


def test_api_key_file_must_be_absolute():
    assert "kitty_servers.q4.api_key_file:" in error_of(q4={"api_key_file": "secrets/q4.key"})


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "hf_token", "DB_PASSWORD", "MY_SECRET"])
def test_server_env_may_not_hold_a_secret(name):
    message = error_of(q4={"env": {name: "x"}})
    assert f"kitty_servers.q4.env: {name!r} looks like a secret" in message


def test_server_env_names_must_be_variable_names():
    assert "kitty_servers.q4.env.BAD-NAME: bad name" in error_of(q4={"env": {"BAD-NAME": "x"}})


def test_plain_env_is_accepted():
    assert load(q4={"env": {"GGML_METAL_PATH_RESOURCES": "/opt"}}).servers["q4"].env == {
        "GGML_METAL_PATH_RESOURCES": "/opt"
    }


def test_kv_unified_is_a_field_and_gives_each_request_the_whole_context():
    cfg = load(q4={"kv_unified": True, "ctx_size": 16384, "parallel": 4})
    assert "--kv-unified" in argv(cfg, "q4")
    assert cfg.servers["q4"].ctx_per_request == 16384
    # Off (the default): --parallel 4 splits --ctx-size 16384 into four slots of 4096.
    plain = load(q4={"ctx_size": 16384, "parallel": 4})
    assert "--kv-unified" not in argv(plain, "q4")
    assert plain.servers["q4"].ctx_per_request == 4096
    with pytest.raises(config.ConfigError, match="is set by the field 'kv_unified'"):
        load(q4={"extra_args": ["--kv-unified"]})
