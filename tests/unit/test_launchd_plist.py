"""The launchd plist of a model server, rendered from templates/ and read back with plistlib."""

import copy
import dataclasses
import plistlib

import pytest

from tasks import config
from tasks.host.platform import Platform
from tasks.inference import server_args, servers
from tasks.supervise import launchd
from tasks.supervise.program import Program
from tests.unit.data import DEFAULTS

BINARY = "/opt/kitty/llama.cpp/current/bin/llama-server"


def load(data=None):
    return config.load(data or DEFAULTS)


MAC = Platform(os="macos", arch="arm64", user="admin", sudo=True, brew_prefix="/opt/homebrew")
# The build id does not appear in the plist: servers run `current`.
BUILD = "b11434-metal-0000000000"


def parsed(cfg, name="q4", **changes) -> dict:
    program = dataclasses.replace(servers.program(cfg, MAC, name, cfg.servers[name], BUILD), **changes)
    return plistlib.loads(launchd.render(program).encode())


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
    assert plist.pop("UserName") == "admin"
    assert plist.pop("RunAtLoad") is True
    assert plist.pop("KeepAlive") is True
    assert plist.pop("ThrottleInterval") == 10
    assert plist.pop("ProcessType") == "Interactive"
    # launchd's defaults: SIGKILL a few seconds after SIGTERM, 256 open files.
    assert plist.pop("ExitTimeOut") == 30
    assert plist.pop("SoftResourceLimits") == {"NumberOfFiles": 10240}
    assert plist.pop("HardResourceLimits") == {"NumberOfFiles": 10240}
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
        launchd.render(Program("x", "x", "x.service", "x", ["/bin/x", "a\x1bb"], "/tmp/x.log", "/"))


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
    args = parsed(load(data))["ProgramArguments"]
    assert args[args.index("--api-key-file") + 1] == "/opt/kitty/secrets/q4.key"
    assert "--api-key" not in args


def test_label_prefix_changes_the_label():
    data = copy.deepcopy(DEFAULTS)
    data["kitty_launchd"]["label_prefix"] = "org.example.llm."
    assert parsed(load(data))["Label"] == "org.example.llm.q4"


def test_where_plists_live():
    assert launchd.plist_path("com.kitty.llama-server.q4") == "/Library/LaunchDaemons/com.kitty.llama-server.q4.plist"


def test_a_run_once_job_is_not_kept_alive():
    program = Program("x", "x", "x.service", "x", ["/usr/sbin/sysctl", "a=1"], "/tmp/x.log", "/", keep_alive=False)
    plist = plistlib.loads(launchd.render(program).encode())
    assert plist["RunAtLoad"] is True
    assert "KeepAlive" not in plist and "ThrottleInterval" not in plist


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
