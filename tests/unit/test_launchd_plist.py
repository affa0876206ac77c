"""The launchd plist of a model server, rendered from templates/ and read back with plistlib."""

import copy
import plistlib

import pytest

from tasks import config, launchd, server_args
from tests.unit.data import DEFAULTS

BINARY = "/opt/kitty/current/bin/llama-server"


def load(data=None):
    return config.load(data or DEFAULTS)


def parsed(cfg, name="q4", user="admin", **kwargs) -> dict:
    text = launchd.server_plist(cfg, name, cfg.servers[name], binary=BINARY, user=user, **kwargs)
    return plistlib.loads(text.encode())


def test_a_daemon_plist_key_by_key():
    cfg = load()
    plist = parsed(cfg)
    assert plist.pop("Label") == "com.kitty.llama-server.q4"
    assert plist.pop("ProgramArguments") == server_args.arguments(
        cfg, "q4", cfg.servers["q4"], BINARY, cfg.paths.models_dir
    )
    assert plist.pop("WorkingDirectory") == "/opt/kitty"
    assert plist.pop("StandardOutPath") == "/Users/Shared/Coding/KITT/.logs/llamacpp-q4.log"
    assert plist.pop("StandardErrorPath") == "/Users/Shared/Coding/KITT/.logs/llamacpp-q4.log"
    assert plist.pop("EnvironmentVariables") == {}
    assert plist.pop("UserName") == "admin"
    assert plist.pop("RunAtLoad") is True
    assert plist.pop("KeepAlive") is True
    assert plist.pop("ThrottleInterval") == 10
    assert plist.pop("ProcessType") == "Interactive"
    assert plist == {}, f"keys nobody checked: {sorted(plist)}"


def test_each_server_logs_to_the_manuals_file():
    cfg = load()
    for name in cfg.servers:
        assert parsed(cfg, name)["StandardOutPath"] == f"{cfg.paths.logs_dir}/llamacpp-{name}.log"


def test_odd_characters_survive_the_round_trip():
    data = copy.deepcopy(DEFAULTS)
    data["kitty_paths"]["models_dir"] = "/Volumes/Big Disk/R&D <models>"
    data["kitty_paths"]["logs_dir"] = "/Users/Shared/K&T <logs>"
    data["kitty_servers"]["q4"]["alias"] = "q4 \"tools\" & 'more'"
    data["kitty_servers"]["q4"]["extra_args"] = ["--chat-template-kwargs", '{"enable_thinking": false} <&>']
    data["kitty_servers"]["q4"]["env"] = {"KITTY_NOTE": "a < b & c > d"}
    cfg = load(data)
    plist = parsed(cfg, working_directory="/opt/kitty & co")
    assert plist["ProgramArguments"][plist["ProgramArguments"].index("--model") + 1] == (
        "/Volumes/Big Disk/R&D <models>/athene-v2-agent/Athene-V2-Agent-Q4_K_M.gguf"
    )
    assert plist["ProgramArguments"][plist["ProgramArguments"].index("--alias") + 1] == "q4 \"tools\" & 'more'"
    assert plist["ProgramArguments"][-1] == '{"enable_thinking": false} <&>'
    assert plist["StandardErrorPath"] == "/Users/Shared/K&T <logs>/llamacpp-q4.log"
    assert plist["WorkingDirectory"] == "/opt/kitty & co"
    assert plist["EnvironmentVariables"] == {"KITTY_NOTE": "a < b & c > d"}


def test_a_control_character_is_refused_by_name():
    with pytest.raises(ValueError, match="control character"):
        launchd.render_plist(
            job_label="x",
            arguments=["/bin/x", "a\x1bb"],
            working_directory="/",
            log="/tmp/x.log",
            environment={},
            throttle_interval=10,
        )


def test_an_agent_has_no_user_name():
    data = copy.deepcopy(DEFAULTS)
    data["kitty_launchd"]["kind"] = "agent"
    assert "UserName" not in parsed(load(data))


def test_environment_and_throttle_come_from_group_data():
    data = copy.deepcopy(DEFAULTS)
    data["kitty_launchd"]["throttle_interval"] = 30
    data["kitty_servers"]["q4"]["env"] = {"LLAMA_LOG_COLORS": "off"}
    plist = parsed(load(data))
    assert plist["ThrottleInterval"] == 30
    assert plist["EnvironmentVariables"] == {"LLAMA_LOG_COLORS": "off"}


def test_the_plist_carries_the_key_file_path_never_a_key():
    data = copy.deepcopy(DEFAULTS)
    data["kitty_servers"]["q4"]["api_key_file"] = "/opt/kitty/secrets/q4.key"
    text = launchd.server_plist(load(data), "q4", load(data).servers["q4"], binary=BINARY, user="admin")
    args = plistlib.loads(text.encode())["ProgramArguments"]
    assert args[args.index("--api-key-file") + 1] == "/opt/kitty/secrets/q4.key"
    assert "--api-key" not in args


def test_label_prefix_changes_the_label():
    data = copy.deepcopy(DEFAULTS)
    data["kitty_launchd"]["label_prefix"] = "org.example.llm."
    assert parsed(load(data))["Label"] == "org.example.llm.q4"


def test_where_plists_live():
    assert launchd.plist_path("com.kitty.llama-server.q4", "daemon") == (
        "/Library/LaunchDaemons/com.kitty.llama-server.q4.plist"
    )
    assert launchd.plist_path("l", "agent", home="/Users/admin/") == "/Users/admin/Library/LaunchAgents/l.plist"
    assert launchd.domain("daemon") == "system"
    assert launchd.domain("agent", uid=501) == "gui/501"
    with pytest.raises(ValueError, match="uid"):
        launchd.domain("agent")
    with pytest.raises(ValueError, match="home"):
        launchd.plist_path("l", "agent")


# --- Validation rules of kitty_launchd -------------------------------------


def error_of(**changes) -> str:
    data = copy.deepcopy(DEFAULTS)
    data["kitty_launchd"].update(changes)
    with pytest.raises(config.ConfigError) as raised:
        config.load(data)
    return str(raised.value)


@pytest.mark.parametrize("prefix", ["com.kitty.llama-server", "com kitty.", ".com.kitty.", "com..kitty.", "com/kitty."])
def test_label_prefix_must_be_reverse_dns_ending_in_a_dot(prefix):
    assert "kitty_launchd.label_prefix:" in error_of(label_prefix=prefix)


def test_kind_is_daemon_or_agent():
    assert "kitty_launchd.kind:" in error_of(kind="login-item")


def test_throttle_interval_is_positive():
    assert "kitty_launchd.throttle_interval:" in error_of(throttle_interval=0)


def test_unknown_launchd_setting():
    assert "kitty_launchd.keepalive: unknown setting (a typo?)" in error_of(keepalive=False)
