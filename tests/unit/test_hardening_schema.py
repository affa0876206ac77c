"""No configuration value reaches a unit, a plist, the .env or a root shell as syntax (issue 18).

Every string of the schema goes through one validator (config.Text: no newline or
control character); git URLs and refs, the health path, secret-bearing flags and
listening beyond loopback have rules of their own. A property test feeds the
string fields that reach rendered files with control characters, shell
metacharacters and quotes: each value is refused naming its field, or the files
render to something that parses back to exactly that value (systemd's quoting,
plistlib, compose's dotenv rules), and `systemd-analyze verify` accepts the unit.
"""

from __future__ import annotations

import copy
import plistlib
import re
import shutil
import subprocess
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tasks import config
from tasks.app import secrets
from tasks.config import schema
from tasks.inference import servers
from tasks.supervise import Program, launchd, systemd
from tests.plan.harness import group_data, simulated_platform

DEFAULTS = {key: value for key, value in group_data().items() if key.startswith("kitty_")}
LINUX = simulated_platform("linux", "admin", "x86_64")
MAC = simulated_platform("macos", "admin", "arm64")
EXPECTED = Path(__file__).parent / "expected"


def load(**changes) -> config.KittyConfig:
    return config.load(changed(**changes))


def changed(**changes) -> dict:
    """DEFAULTS with `section__key__...=value` changes (a missing key is created)."""
    data = copy.deepcopy(DEFAULTS)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = data
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return data


def refused(**changes) -> str:
    with pytest.raises(config.ConfigError) as raised:
        load(**changes)
    return str(raised.value)


# --- One string type for every field ----------------------------------------------------


def _unchecked_strings(annotation, where: str) -> list[str]:
    """Places under `annotation` where a `str` does not carry config.Text's validator."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is str:
        return [where]
    if origin is typing.Annotated:
        base, *metadata = args
        if base is str:
            checked = any(getattr(m, "func", None) is schema._one_line for m in metadata)
            return [] if checked else [where]
        return _unchecked_strings(base, where)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [
            place
            for name, field in annotation.model_fields.items()
            for place in _unchecked_strings(field.rebuild_annotation(), f"{where}.{name}")
        ]
    if origin is typing.Literal:
        return []
    return [place for index, arg in enumerate(args) for place in _unchecked_strings(arg, f"{where}[{index}]")]


def test_every_string_field_of_the_schema_is_the_one_line_text_type():
    # A field added as plain `str` fails here: use config.Text (or a type built on it).
    assert _unchecked_strings(config.KittyConfig, "kitty") == []


@pytest.mark.parametrize(
    "changes, field",
    [
        # The reproduction: a unit line that runs as root.
        ({"kitty_paths__logs_dir": "/var/log\nExecStartPre=+/bin/true"}, "kitty_paths.logs_dir"),
        ({"kitty_servers__q4__alias": "q4\rx"}, "kitty_servers.q4.alias"),
        ({"kitty_servers__q4__extra_args": ["--temp", "0.7\n"]}, "kitty_servers.q4.extra_args.1"),
        ({"kitty_servers__q4__env": {"GREETING": "hi\x1b[2J"}}, "kitty_servers.q4.env.GREETING"),
        ({"kitty_stack__extra_hosts": {"a": "b\u2028c"}}, "kitty_stack.extra_hosts.a"),
        ({"kitty_models__hermes-summary__note": "line\x00"}, "kitty_models.hermes-summary.note"),
        ({"kitty_packages__apt": ["curl\n"]}, "kitty_packages.apt.0"),
    ],
)
def test_a_newline_or_control_character_is_refused_in_any_field_naming_it(changes, field):
    assert f"{field}: holds a newline or control character" in refused(**changes)


# --- Git URLs and refs (reach git and a gitconfig) -------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/x/y.git\n[core]\n\tfsmonitor = touch /tmp/pwned",
        "ext::sh -c touch% /tmp/pwned",
        "-uhttps://x/y",
        "ssh://-oProxyCommand=touch%20/tmp/pwned/x",
        "http://plain.example/x.git",
        "/srv/mirror with space",
    ],
)
def test_a_git_url_outside_https_ssh_file_or_scp_form_is_refused(url):
    assert "kitty_stack.repo_url:" in refused(kitty_stack__repo_url=url)
    assert "kitty_llamacpp.git_url:" in refused(kitty_llamacpp__git_url=url)


@pytest.mark.parametrize(
    "url", ["https://github.com/ggml-org/llama.cpp.git", "git@github.com:kitty/KITT.git", "file:///srv/mirrors/x"]
)
def test_the_usual_git_urls_are_accepted(url):
    assert load(kitty_stack__repo_url=url).stack.repo_url == url


@pytest.mark.parametrize("ref", ["--upload-pack=touch /tmp/x", "v1..v2", "a b", "x^{tree}", "a:b", "@", "x.lock", ".x"])
def test_a_ref_git_check_ref_format_refuses_is_refused(ref):
    assert "not a valid git ref" in refused(kitty_llamacpp__ref=ref)
    assert "kitty_stack.ref: " in refused(kitty_stack__ref=ref)


@pytest.mark.parametrize("ref", ["b11434", "v2.0.0", "fixture-1", "release/2025-01", "0123abc"])
def test_tags_branches_and_commits_are_accepted(ref):
    assert load(kitty_llamacpp__ref=ref).llamacpp.ref == ref


# --- The stack's health path (reaches a shell run with sudo) ----------------------------


@pytest.mark.parametrize("path", ["/health;touch /tmp/pwned;#", "/h`id`", "/h$(id)", "/h x", "/h'x", "/h|x"])
def test_a_health_path_with_shell_syntax_is_refused(path):
    assert "kitty_stack.services.brain.health:" in refused(kitty_stack__services__brain__health=path)


def test_an_ordinary_health_path_is_accepted():
    assert load(kitty_stack__services__brain__health="/api/health?full=1&x=2").stack.services["brain"].health


# --- Secret-bearing flags, listening beyond loopback, pinned downloads ------------------


@pytest.mark.parametrize("arg", ["--hf-token", "--hf-token=hf_abc", "-hft", "--api-key", "--api-key=sk-1"])
def test_a_secret_bearing_llama_server_flag_is_refused_without_showing_its_value(arg):
    message = refused(kitty_servers__q4__extra_args=[arg, "x"])
    assert "kitty_servers.q4.extra_args: " in message and "would put the key in a world-readable plist" in message
    assert "hf_abc" not in message and "sk-1" not in message


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "192.168.1.20", "studio.local"])
def test_a_server_beyond_loopback_needs_a_key_file(address):
    assert f"kitty_servers.q4: host '{address}' is beyond loopback: give api_key_file" in refused(
        kitty_servers__q4__host=address
    )
    cfg = load(kitty_servers__q4__host=address, kitty_servers__q4__api_key_file="/opt/kitty/secrets/q4.key")
    assert cfg.servers["q4"].host == address


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.1.1", "::1", "localhost"])
def test_loopback_needs_no_key(address):
    assert load(kitty_servers__q4__host=address).servers["q4"].api_key_file is None


def test_the_compose_plugin_downloaded_from_the_internet_is_pinned_by_default():
    plugin = config.load(DEFAULTS).stack.compose_plugin
    assert plugin.url.startswith("https://") and len(plugin.sha256_for("x86_64")) == 64
    assert plugin.sha256_for("aarch64") != plugin.sha256_for("x86_64")
    assert "kitty_stack.compose_plugin: sha256 missing" in refused(
        kitty_stack__compose_plugin={"url": plugin.url, "sha256": None}
    )
    mirror = {"url": "file:///srv/mirrors/docker-compose/docker-compose", "sha256": None}
    assert load(kitty_stack__compose_plugin=mirror).stack.compose_plugin.sha256 is None


# --- Renderers against fixed files --------------------------------------------------------

# A fixed program (not built from group_data, so only the templates can change these
# files) whose values need every kind of escaping each syntax has.
TRICKY = Program(
    name="server q4",
    label="com.kitty.llama-server.q4",
    unit="kitty-llama-q4.service",
    description='KITTY llama-server q4 (100% "quoted")',
    argv=[
        "/opt/kitty/llama.cpp/current/bin/llama-server",
        "--alias",
        'q4 "quoted" 100% $HOME \\ it\'s',
        "--system-prompt-file",
        "/srv/a b/%n.txt",
    ],  # fmt: skip
    log="/srv/kitty/.logs/llamacpp-q4.log",
    working_directory="/opt/kitty",
    user="kitty",
    env={"GREETING": 'x y $Z %h "q" \\ <&>', "LLAMA_ARG_THREADS": "20"},
)


def tricky_program(plat):
    return TRICKY


def test_the_unit_is_the_expected_file():
    assert systemd.render(tricky_program(LINUX)) == (EXPECTED / "llama-server-q4.service").read_text()


def test_the_plist_is_the_expected_file():
    assert launchd.render(tricky_program(MAC)) == (EXPECTED / "llama-server-q4.plist").read_text()


def test_the_env_file_is_the_expected_file():
    cfg = load(kitty_stack__env={"OFFLINE_MODE": "true", "GREETING": 'a "b" $c %d <e>'})
    text = secrets.render_env(cfg, {"ADMIN_USERS": "admin:$2b$12$abcdefghijklmnopqrstuv"})
    assert text == (EXPECTED / "kitty.env").read_text()


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    unit = tmp_path / "kitty-llama-q4.service"
    unit.write_text(systemd.render(tricky_program(LINUX)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    # The binary is on the host, not here: the one complaint expected.
    complaints = [line for line in done.stderr.splitlines() if line and "is not executable" not in line]
    assert complaints == []


# --- Parsers that read files back as their consumers do ----------------------------------

C_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'"}


def _specifiers(text: str) -> str:
    """systemd resolves % specifiers first: %% is a %, any other one would change the value."""
    if re.search(r"%[^%]", text.replace("%%", "")):
        raise AssertionError(f"an unescaped specifier in {text!r}")
    return text.replace("%%", "%")


def systemd_words(text: str) -> list[str]:
    """extract_first_word(EXTRACT_UNQUOTE|EXTRACT_CUNESCAPE) over a whole setting value."""
    words, word, quote, escape, started = [], "", None, False, False
    for char in _specifiers(text):
        if escape:
            assert char in C_ESCAPES, f"unknown escape \\{char}"
            word, escape = word + C_ESCAPES[char], False
        elif char == "\\":
            escape, started = True, True
        elif quote:
            if char == quote:
                quote = None
            else:
                word += char
        elif char in "\"'":
            quote, started = char, True
        elif char in " \t":
            if started:
                words.append(word)
            word, started = "", False
        else:
            word, started = word + char, True
    assert quote is None and not escape, f"unbalanced quoting in {text!r}"
    return [*words, word] if started else words


def parse_unit(text: str) -> dict:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value.strip())
    argv = []
    for arg in systemd_words(settings["ExecStart"][0]):
        # At exec time $$ is a $, and $NAME or ${NAME} would be expanded.
        assert not re.search(r"\$[A-Za-z_{]", arg.replace("$$", "")), f"a variable in {arg!r}"
        argv.append(arg.replace("$$", "$"))
    env = dict(systemd_words(value)[0].split("=", 1) for value in settings.get("Environment", []))
    return {
        "argv": argv,
        "env": env,
        "working_directory": _specifiers(settings["WorkingDirectory"][0]),
        "log": _specifiers(settings["StandardOutput"][0]).removeprefix("append:"),
    }


def parse_dotenv(text: str) -> dict[str, str]:
    """compose's dotenv rule for single quotes: the value ends at the first quote not after a backslash."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)='(.*)'", line)
            assert match, f"not NAME='value': {line!r}"
            inner = match.group(2)
            assert "'" not in inner.replace("\\'", "") and not inner.endswith("\\"), f"compose misreads {line!r}"
            values[match.group(1)] = inner
    return values


# --- The property test -------------------------------------------------------------------

ALPHABET = (
    list("aZ09/-._ =:@,+")
    + list(";|&$`()<>*?!#~{}[]^%\\'\"")
    + ["\n", "\r", "\t", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "é"]
)
values = st.text(alphabet=st.sampled_from(ALPHABET), max_size=16)

# Field -> (where the value goes, the name an error must give).
FIELDS = {
    "logs_dir": (lambda v: {"kitty_paths__logs_dir": "/" + v}, "kitty_paths.logs_dir"),
    "opt_dir": (lambda v: {"kitty_paths__opt_dir": "/" + v}, "kitty_paths.opt_dir"),
    "models_dir": (lambda v: {"kitty_paths__models_dir": "/" + v}, "kitty_paths.models_dir"),
    "alias": (lambda v: {"kitty_servers__q4__alias": v}, "kitty_servers.q4"),
    "extra_args": (lambda v: {"kitty_servers__q4__extra_args": ["--temp", v]}, "kitty_servers.q4.extra_args"),
    "server env": (lambda v: {"kitty_servers__q4__env": {"GREETING": v}}, "kitty_servers.q4.env"),
    "host": (lambda v: {"kitty_servers__q4__host": v}, "kitty_servers.q4"),
    "stack env": (lambda v: {"kitty_stack__env": {"GREETING": v}}, "kitty_stack.env"),
    "model_host": (lambda v: {"kitty_stack__model_host": v}, "kitty_stack.model_host"),
    "repo_url": (lambda v: {"kitty_stack__repo_url": "https://x/" + v}, "kitty_stack.repo_url"),
    "ref": (lambda v: {"kitty_llamacpp__ref": v}, "kitty_llamacpp.ref"),
    "health": (lambda v: {"kitty_stack__services__brain__health": "/" + v}, "kitty_stack.services.brain.health"),
}


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(FIELDS)), value=values)
def test_every_value_is_refused_naming_its_field_or_parses_back_exactly(field, value):
    place, name = FIELDS[field]
    data = changed(**place(value))
    try:
        cfg = config.load(data)
    except config.ConfigError as error:
        assert f"  - {name}" in str(error), str(error)
        return
    q4 = cfg.servers["q4"]
    program = servers.program(cfg, LINUX, "q4", q4, "b1-cpu-0")
    unit = parse_unit(systemd.render(program))
    assert unit == {"argv": program.argv, "env": program.env, "working_directory": program.working_directory,
                    "log": program.log}  # fmt: skip
    mac_program = servers.program(cfg, MAC, "q4", q4, "b1-metal-0")
    plist = plistlib.loads(launchd.render(mac_program).encode())
    assert plist["ProgramArguments"] == mac_program.argv
    assert plist.get("EnvironmentVariables", {}) == mac_program.env
    assert plist["StandardOutPath"] == mac_program.log and plist["WorkingDirectory"] == mac_program.working_directory
    assert parse_dotenv(secrets.render_env(cfg, {})) == secrets.env_values(cfg)
    # What reaches git or a shell as a word: never an option, never a line break.
    for text in (cfg.stack.repo_url, cfg.llamacpp.ref, cfg.stack.services["brain"].health or ""):
        assert not text.startswith("-") and not re.search(r"\s", text)
