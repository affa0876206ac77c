"""The application stack planned for simulated Macs (colima) and Linux hosts."""

import copy
import json

import pytest
from pyinfra.api import FileUploadCommand
from pyinfra.api.exceptions import PyinfraError
from pyinfra.context import ctx_host

from tasks import config
from tasks.app import compose, runtime, secrets
from tasks.engine import operations
from tasks.host import layout
from tests.plan import hosts, stack_facts
from tests.plan.harness import plan, prepared, simulated_platform

CFG = config.load(hosts.DEFAULTS)
MAC = simulated_platform("macos", "admin", "arm64")
COLIMA_SOCKET = "unix:///Users/admin/.colima/default/docker.sock"
STACK_OPS = ("docker compose up", "Wait for the stack's health")
CLI_CONFIG = "/Users/admin/.docker/config.json"
BREW_PLUGINS = "/opt/homebrew/lib/docker/cli-plugins"
FIND_PLUGINS = "Docker CLI finds Homebrew's plugins (buildx)"


def stack_data(**changes) -> dict:
    data = copy.deepcopy(hosts.DEFAULTS["kitty_stack"])
    data.update(changes)
    return {"kitty_stack": data}


def names(result) -> list[str]:
    return [op.name for op in result.ops]


def with_facts(base: dict, *updates: dict) -> dict:
    # The first match wins: the changed facts go in front.
    merged = {}
    for update in updates:
        merged.update(update)
    return {**merged, **{k: v for k, v in base.items() if k not in merged}}


def uploaded(facts: dict, op_name: str, data: dict | None = None) -> dict[str, str]:
    """What the operation `op_name` would upload, by destination: the text itself, not its repr."""
    with prepared(facts, data) as (state, host, _):
        for op_hash in state.get_op_order():
            if op_hash in state.ops[host] and op_name in sorted(state.op_meta[op_hash].names)[0]:
                with ctx_host.use(host):
                    commands = list(state.get_op_data_for_host(host, op_hash).command_generator())
                return {c.dest: c.src.getvalue() for c in commands if isinstance(c, FileUploadCommand)}
    raise AssertionError(f"no operation named {op_name!r}")


# --- macOS: colima, headless -------------------------------------------------------


def test_fresh_mac_runs_colima_as_a_launch_daemon_of_the_admin_not_docker_desktop():
    result = plan(hosts.macos(installed=hosts.BREW_PACKAGES))
    job = result.op("colima: install (new)")
    text = "\n".join(job.commands)
    assert "launchctl bootstrap system /Library/LaunchDaemons/com.kitty.colima.plist" in text
    plist = stack_facts.colima_plist(CFG, MAC)
    for expected in ("<string>start</string>", "<string>--foreground</string>", "<key>UserName</key>"):
        assert expected in plist
    assert "<string>--cpu</string>\n\t\t<string>4</string>" in plist
    assert "<key>HOME</key>\n\t\t<string>/Users/admin</string>" in plist
    # colima stops its VM on SIGTERM: launchd must give it time before SIGKILL.
    assert "<key>ExitTimeOut</key>\n\t<integer>120</integer>" in plist
    assert not any("Docker.app" in c or "open -a" in c for c in result.commands)


def test_fresh_mac_waits_for_colima_then_brings_the_stack_up_through_its_socket(planned):
    result = plan(hosts.macos(installed=hosts.BREW_PACKAGES))
    order = names(result)
    assert order.index("colima: install (new)") < order.index("Wait for the container engine (docker info)")
    assert order.index("Wait for the container engine (docker info)") < order.index("docker compose up")
    (up,) = result.op("docker compose up").commands
    assert up.startswith("docker-compose -p kitty -f /Users/Shared/Coding/KITT/infra/compose/docker-compose.yml")
    assert "--env-file /Users/Shared/Coding/KITT/.env up -d" in up and "--build" in up
    envs = [env for command, env in result.executed if "docker info" in command or "config --hash" in command]
    assert envs and all(env.get("DOCKER_HOST") == COLIMA_SOCKET for env in envs)
    assert all(env["PATH"].startswith("/opt/homebrew/bin:") for env in envs)
    # colima's engine is the admin's: compose runs without sudo.
    assert planned["docker compose up"][0]["_sudo"] is False
    assert planned["Wait for the stack's health"][0]["_sudo"] is False


def test_converged_mac_plans_nothing_for_the_stack():
    assert plan(hosts.macos_converged()).ops == []


def test_new_colima_size_restarts_colima_then_brings_the_stack_back():
    data = stack_data(colima={"cpu": 8, "memory_gib": 16, "disk_gib": 100, "profile": "default"})
    result = plan(hosts.macos_converged(), data=data)
    assert names(result) == [
        "colima: reload (its definition changed)",
        "Wait for the container engine (docker info)",
        *STACK_OPS,
    ]
    assert "--build" not in result.op("docker compose up").commands[0]
    assert "launchctl bootout system/com.kitty.colima" in "\n".join(result.op(names(result)[0]).commands)


def test_colima_not_answering_is_waited_for_with_a_clear_error():
    facts = with_facts(hosts.macos_converged(), stack_facts.docker_info(ok=False))
    result = plan(facts)
    (wait,) = result.op("Wait for the container engine (docker info)").commands
    assert "colima's Docker engine did not answer docker info within 300s" in wait


def test_docker_desktop_not_running_stops_with_the_gui_login_explained():
    facts = with_facts(hosts.macos_converged(), stack_facts.docker_info(ok=False))
    with pytest.raises(PyinfraError, match="only starts in a GUI login session"):
        plan(facts, data=stack_data(runtime="docker-desktop"))


def test_docker_desktop_running_is_only_used():
    result = plan(hosts.macos_converged(), data=stack_data(runtime="docker-desktop"))
    assert result.ops == []
    envs = [env for command, env in result.executed if "docker info" in command]
    assert envs and all("DOCKER_HOST" not in env for env in envs)


def test_colima_without_its_formulae_is_refused():
    packages = {"brew": [p for p in hosts.BREW_PACKAGES if p != "colima"], "apt": hosts.APT_PACKAGES}
    with pytest.raises(PyinfraError, match="needs colima in kitty_packages.brew"):
        plan(hosts.macos_converged(), data={"kitty_packages": packages})


# --- macOS: the docker CLI finds Homebrew's buildx (and compose) --------------------


def test_fresh_mac_installs_buildx_and_creates_the_cli_config_that_finds_it(planned):
    result = plan(hosts.macos(installed=hosts.BREW_PACKAGES))
    assert "docker-buildx" in runtime.COLIMA_FORMULAE and "docker-buildx" in hosts.BREW_PACKAGES
    assert result.op(FIND_PLUGINS).commands[0] == "mkdir -p /Users/admin/.docker && umask 077 && touch " + CLI_CONFIG
    written = uploaded(hosts.macos(installed=hosts.BREW_PACKAGES), FIND_PLUGINS)
    assert json.loads(written[CLI_CONFIG]) == {"cliPluginsExtraDirs": [BREW_PLUGINS]}
    # Before compose can build: the first `up` of a fresh Mac builds.
    assert names(result).index(FIND_PLUGINS) < names(result).index("docker compose up")
    # Not sudo: the admin's own file.
    assert planned[FIND_PLUGINS][0]["_sudo"] is False


def test_converged_mac_reads_the_cli_config_and_plans_nothing_for_it():
    result = plan(hosts.macos_converged())
    assert result.ops == []
    assert any(f"cat {CLI_CONFIG}" in command for command, _ in result.executed)


@pytest.mark.parametrize(
    "existing",
    [
        {"auths": {"ghcr.io": {}}, "credsStore": "osxkeychain", "currentContext": "colima"},
        {"currentContext": "colima", "cliPluginsExtraDirs": ["/Users/admin/.docker/more-plugins"]},
        {},
    ],
)
def test_a_cli_config_without_brews_folder_gets_it_once_keeping_every_other_key(existing):
    facts = with_facts(hosts.macos_converged(), stack_facts.docker_cli_config("admin", existing))
    result = plan(facts)
    assert names(result) == [FIND_PLUGINS]
    # An existing file is written in place: its mode (0600 from the docker CLI) stays.
    (write,) = result.op(FIND_PLUGINS).commands
    assert write.startswith("FileUploadCommand(") and write.endswith(f", {CLI_CONFIG})")
    merged = json.loads(uploaded(facts, FIND_PLUGINS)[CLI_CONFIG])
    others = existing.get("cliPluginsExtraDirs", [])
    assert merged == {**existing, "cliPluginsExtraDirs": [BREW_PLUGINS, *others]}


def test_intel_mac_points_at_usr_local():
    facts = with_facts(hosts.macos_converged(arch="x86_64"), stack_facts.docker_cli_config("admin", None))
    merged = json.loads(uploaded(facts, FIND_PLUGINS)[CLI_CONFIG])
    assert merged == {"cliPluginsExtraDirs": ["/usr/local/lib/docker/cli-plugins"]}


def test_a_cli_config_holding_registry_credentials_is_never_read_nor_written(caplog):
    facts = with_facts(
        hosts.macos_converged(),
        {f"[ ! -e {CLI_CONFIG} ]": "credentials"},
    )
    assert plan(facts).ops == []
    assert f'Add "cliPluginsExtraDirs": ["{BREW_PLUGINS}"]' in caplog.text


def test_the_credentials_check_matches_inline_auth_only(tmp_path):
    import subprocess

    from tasks.app.compose import CREDENTIALS

    def holds_credentials(config: dict) -> bool:
        path = tmp_path / "config.json"
        path.write_text(json.dumps(config, indent="\t"))
        return subprocess.run(["grep", "-Eq", CREDENTIALS, str(path)]).returncode == 0

    assert holds_credentials({"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"}}})
    assert holds_credentials({"auths": {"r.example": {"identitytoken": "tok"}}})
    assert not holds_credentials({"auths": {"ghcr.io": {}}, "credsStore": "osxkeychain"})
    assert not holds_credentials({"auths": {"r.example": {"auth": ""}}})


@pytest.mark.parametrize("shell", ["sh", "dash", "bash"])
def test_the_cli_config_fact_reads_real_files_under_posix_shells(tmp_path, shell):
    import shutil
    import subprocess

    from tasks.app.compose import DockerCliConfig

    if not shutil.which(shell):
        pytest.skip(f"no {shell}")

    def read(path) -> dict:
        command = DockerCliConfig().command(str(path))
        output = subprocess.run([shell, "-c", command], capture_output=True, text=True, check=True).stdout
        return DockerCliConfig().process(output.splitlines())

    path = tmp_path / "config.json"
    assert read(path)["state"] == "absent"
    path.write_text(json.dumps({"currentContext": "colima", "auths": {}}, indent="\t"))
    assert read(path) == {"state": "json", "config": {"currentContext": "colima", "auths": {}}, "error": None}
    path.write_text("")
    assert read(path)["config"] == {}
    path.write_text('{"auths": {"r.example": {"auth": "dXNlcjpwYXNz"}}}')
    assert read(path) == {"state": "credentials", "config": None, "error": None}
    path.write_text("[1]")
    assert read(path)["error"] == "not a JSON object"
    assert read(tmp_path)["state"] == "invalid"


def test_a_cli_config_that_is_not_json_stops_the_converge_without_overwriting_it():
    facts = with_facts(hosts.macos_converged(), stack_facts.docker_cli_config("admin", None, raw="{ not json"))
    with pytest.raises(PyinfraError, match="config.json: not JSON"):
        plan(facts)


def test_docker_desktop_and_linux_plan_nothing_for_the_cli_config():
    for facts, data in ((hosts.macos_converged(), stack_data(runtime="docker-desktop")), (hosts.linux(), None)):
        result = plan(facts, data=data)
        assert FIND_PLUGINS not in names(result)
        assert not any(".docker/config.json" in command for command, _ in result.executed)


def test_linux_engine_on_a_mac_is_refused():
    with pytest.raises(PyinfraError, match="'engine' does not run on macos"):
        plan(hosts.macos_converged(), data=stack_data(runtime="engine"))


# --- Linux: the Docker engine, or an external one ------------------------------------


def test_fresh_linux_installs_and_starts_the_engine_and_compose_v2():
    result = plan(hosts.linux(installed=hosts.APT_PACKAGES))
    order = names(result)
    for name in ("Install docker.io", "Install docker compose v2", "Run the Docker engine"):
        assert order.index(name) < order.index("Wait for the container engine (docker info)")
    download = "\n".join(result.op("Install docker compose v2").commands)
    assert "v2.40.3/docker-compose-linux-x86_64" in download
    (up,) = result.op("docker compose up").commands
    assert up.startswith("docker compose -p kitty ")
    assert "systemctl enable docker.service" in result.op("Run the Docker engine").commands


def test_external_engine_masks_the_package_engine_before_installing_the_client():
    data = stack_data(runtime="external")
    result = plan(hosts.linux(installed=hosts.APT_PACKAGES), data=data)
    order = names(result)
    masks = [name for name in order if name.startswith("Mask ")]
    assert masks == [f"Mask {unit} (the engine is external)" for unit in runtime.ENGINE_UNITS]
    assert order.index("Reload systemd (masked engine units)") < order.index("Install docker.io")
    assert "Run the Docker engine" not in order
    assert "ln -s /dev/null /etc/systemd/system/docker.service" in " ".join(result.op(masks[0]).commands)


def test_converged_linux_plans_nothing_for_the_stack():
    assert plan(hosts.linux_converged()).ops == []


# --- compose: only when something differs -------------------------------------------


@pytest.mark.parametrize(
    "container, reason",
    [
        ({"state": "exited"}, "brain: exited"),
        ({"hash": "old"}, "brain: configuration changed"),
        ({"image": "stale"}, "brain: image changed"),
        (None, "brain: no container"),
    ],
)
def test_compose_state_that_differs_brings_the_stack_up_without_a_rebuild(container, reason):
    facts = with_facts(hosts.linux_converged(), stack_facts.compose(CFG, containers={"brain": container}))
    assert compose.drift(compose.ComposeState().process(facts["config --hash"]), list(CFG.stack.services)) == [reason]
    result = plan(facts)
    assert names(result) == list(STACK_OPS)
    (up,) = result.op("docker compose up").commands
    assert up.endswith("up -d --remove-orphans --quiet-pull 2>&1")


def test_a_changed_env_file_is_rewritten_without_showing_it_and_compose_runs():
    facts = with_facts(hosts.linux_converged(), stack_facts.env_file(CFG, "admin", content="OLD=1\n"))
    result = plan(facts)
    assert names(result) == ["Write .env (mode 0600, contents never shown)", *STACK_OPS]
    write = result.op("Write .env (mode 0600, contents never shown)").commands
    # One command: the contents go on its stdin into a 0600 file beside the .env, renamed over it.
    assert write == [operations.replace_from_stdin("/Users/Shared/Coding/KITT/.env")]
    assert "--build" not in result.op("docker compose up").commands[0]


def test_secrets_from_the_environment_reach_the_env_file_but_no_command(monkeypatch):
    secret = "sk-test-do-not-print-4f1e"
    facts = hosts.linux_converged()  # its .env was rendered without the secret
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    rendered = secrets.render_env(CFG, secrets.secret_values(CFG.stack))
    assert f"OPENAI_API_KEY='{secret}'" in rendered
    result = plan(facts)
    assert "Write .env (mode 0600, contents never shown)" in names(result)
    everything = [*result.commands, *(command for command, _ in result.executed), *names(result)]
    assert not any(secret in text for text in everything)


def test_a_world_readable_env_file_is_locked_down():
    facts = with_facts(hosts.linux_converged(), stack_facts.env_file(CFG, "admin", mode="rw-r--r--"))
    write = plan(facts).op("Write .env (mode 0600, contents never shown)").commands
    assert write == [operations.replace_from_stdin("/Users/Shared/Coding/KITT/.env")]


def test_a_new_ref_is_fetched_checked_out_and_rebuilt():
    data = stack_data(ref="v2.0.0")
    facts = with_facts(hosts.linux_converged(), stack_facts.checkout(CFG, wanted=None))
    result = plan(facts, data=data)
    assert names(result) == ["Check out the application at v2.0.0", *STACK_OPS]
    commands = result.op("Check out the application at v2.0.0").commands
    assert commands == [
        "git -C /Users/Shared/Coding/KITT fetch -q --tags --force -- origin",
        "git -C /Users/Shared/Coding/KITT checkout -q --detach 'v2.0.0^{commit}'",
    ]
    assert "--build" in result.op("docker compose up").commands[0]


def test_a_pinned_ref_already_checked_out_plans_nothing():
    assert plan(hosts.linux_converged(), data=stack_data(ref="v1.0.0")).ops == []


def test_a_fresh_host_gets_a_clone_in_the_existing_folder():
    facts = with_facts(hosts.linux_converged(), stack_facts.checkout(CFG, head=None))
    commands = plan(facts, data=stack_data(ref="v1.0.0")).op("Check out the application at v1.0.0").commands
    assert commands[:2] == [
        "git -C /Users/Shared/Coding/KITT init -q",
        "git -C /Users/Shared/Coding/KITT remote add -- origin git@github.com:kitty/KITT.git",
    ]


def test_health_checks_each_service_with_its_own_probe_and_timeout():
    facts = with_facts(hosts.linux_converged(), stack_facts.compose(CFG, containers={"redis": {"state": "exited"}}))
    waits = plan(facts).op("Wait for the stack's health").commands
    by_service = dict(zip(CFG.stack.services, waits, strict=True))
    assert "curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:8000/health" in by_service["brain"]
    assert "-ge 180 ]" in by_service["brain"]
    assert "exec -T redis redis-cli ping | grep -qx PONG" in by_service["redis"]
    assert "SELECT 1" in by_service["postgres"] and "grep -qx 1" in by_service["postgres"]
    assert "ps -q voice" in by_service["voice"]


def test_a_configured_service_missing_from_the_compose_file_is_named():
    services = {**hosts.DEFAULTS["kitty_stack"]["services"], "x": {}}
    with pytest.raises(PyinfraError, match="x: in kitty_stack.services but not in the compose file"):
        plan(hosts.linux_converged(), data=stack_data(services=services))


def test_a_service_the_new_ref_brings_is_not_refused_before_it_is_checked_out():
    # The host's compose file is the old ref's: the new one is judged after its checkout.
    services = {**hosts.DEFAULTS["kitty_stack"]["services"], "x": {}}
    facts = with_facts(hosts.linux_converged(), stack_facts.checkout(CFG, wanted=None))
    result = plan(facts, data=stack_data(ref="v2.0.0", services=services))
    assert "docker compose up" in names(result)


def test_extra_hosts_go_into_an_override_that_compose_reads():
    data = stack_data(extra_hosts={"host.docker.internal": "host-gateway"})
    result = plan(hosts.linux_converged(), data=data)
    assert names(result) == ["Compose override (extra_hosts)", *STACK_OPS]
    (up,) = result.op("docker compose up").commands
    assert "-f /Users/Shared/Coding/KITT/.kitty-ops.compose.json --env-file" in up


def test_disabled_stack_plans_nothing_and_asks_nothing():
    result = plan(hosts.linux(installed=hosts.APT_PACKAGES), data=stack_data(enabled=False))
    assert not any("docker" in command for command, _ in result.executed)


# --- Hardening (issue 18): the .env is written by its owner, the health path is quoted -----

ENV_OP = "Write .env (mode 0600, contents never shown)"


def test_the_env_file_is_written_as_its_owner_never_as_root_and_its_contents_go_on_stdin(planned):
    paths = {**hosts.DEFAULTS["kitty_paths"], "service_user": "kitty"}
    data = {**hosts.DEFAULTS, "kitty_paths": paths}
    plan(hosts.linux_converged(), {"kitty_paths": paths})
    arguments, (command,) = planned[ENV_OP]
    # Every step as the folder's owner: a link planted there reaches only what kitty could write.
    assert arguments["_sudo"] is True and arguments["_sudo_user"] == "kitty"
    cfg = config.load(data)
    rendered = secrets.render_env(cfg, secrets.secret_values(cfg.stack))
    assert command.connector_arguments["_stdin"] == rendered
    assert str(command) == operations.replace_from_stdin(layout.env_file(cfg))


def test_the_env_file_of_the_connecting_user_needs_no_sudo(planned):
    plan(with_facts(hosts.linux_converged(), stack_facts.env_file(CFG, "admin", content="OLD=1\n")))
    arguments, _ = planned[ENV_OP]
    assert not arguments["_sudo"] and not arguments["_sudo_user"]


def test_a_link_in_place_of_the_env_file_is_replaced_not_refused():
    path = layout.env_file(CFG)
    stat = f"user=admin group=admin mode=lrwxrwxrwx atime=0 mtime=0 ctime=0 size=11 '{path}' -> '/etc/shadow'"
    result = plan(with_facts(hosts.linux_converged(), {f"test -L {path} )": stat}))
    assert result.op(ENV_OP).commands == [operations.replace_from_stdin(path)]


def test_the_http_health_path_is_quoted_for_the_shell():
    probe = compose._probe("docker compose", "brain", 8000, "/health?x=1&y=2")
    assert probe.endswith("curl -fsS -o /dev/null --max-time 5 'http://127.0.0.1:8000/health?x=1&y=2'")


@pytest.mark.parametrize(
    ("profile", "folder", "instance"),
    [
        ("default", "default", "colima"),
        ("colima", "default", "colima"),
        ("", "default", "colima"),
        ("kitty", "kitty", "colima-kitty"),
        ("colima-kitty", "kitty", "colima-kitty"),
    ],
)
def test_colimas_socket_and_lima_folder_are_computed_as_colima_does(profile, folder, instance):
    """colima's config/profile.go: `colima` is the default profile and `colima-x` is `x` (issue 25, defect 8)."""
    assert runtime.colima_socket("/Users/admin", profile) == f"/Users/admin/.colima/{folder}/docker.sock"
    assert runtime.lima_instance_dir("/Users/admin", profile) == f"/Users/admin/.colima/_lima/{instance}"


def test_colima_starts_through_the_wrapper_that_clears_a_power_cuts_stale_files():
    """Issue 25, defect 5: stale ha.pid/ha.sock make every `colima start` fail; the wrapper removes them."""
    program = runtime.colima_program(CFG, MAC, "/Users/admin")
    assert program.argv[:3] == ["/bin/sh", layout.colima_wrapper(CFG), "/Users/admin/.colima/_lima/colima"]
    assert program.argv[3:6] == ["/opt/homebrew/bin/colima", "start", "--foreground"]
    result = plan(hosts.macos(installed=hosts.BREW_PACKAGES))
    wrapper = " ".join(result.op("colima start wrapper (stale Lima files after a power cut)").commands)
    assert layout.colima_wrapper(CFG) in wrapper


@pytest.mark.parametrize(("profile", "folder"), [("colima", "default"), ("colima-kitty", "kitty"), ("kitty", "kitty")])
def test_the_engine_is_reached_at_the_socket_colima_makes_for_the_profile(profile, folder):
    data = stack_data(colima={"cpu": 4, "memory_gib": 8, "disk_gib": 60, "profile": profile})
    engine = runtime.Engine(config.load({**hosts.DEFAULTS, **data}), MAC, "colima", "/Users/admin")
    assert engine.env["DOCKER_HOST"] == f"unix:///Users/admin/.colima/{folder}/docker.sock"
