"""A fresh Mac taken to a server-ready state, planned from simulated facts; a converged one plans nothing."""

import copy
import hashlib
import plistlib
import shlex
import subprocess

import pytest
from pyinfra.api import Config
from pyinfra.api.command import FileUploadCommand, StringCommand
from pyinfra.api.exceptions import PyinfraError
from pyinfra.connectors.util import ASKPASS_COMMAND, SUDO_ASKPASS_ENV_VAR
from pyinfra.context import ctx_host

from tasks import config
from tasks.system import macos
from tests.plan import harness, hosts
from tests.plan.harness import plan

BOOTSTRAP = [
    "Install the Xcode Command Line Tools",
    "Install Homebrew",
    "Set the power settings (pmset)",
    "Let Metal wire 237568 MiB (iogpu.wired_limit_mb)",
    "wired-memory limit at boot: install (new)",
]
BREW_PATH = "/opt/homebrew/bin:/opt/homebrew/sbin:"


def bootstrap_ops(result):
    """The operations of the macOS bootstrap step; later steps have their own tests."""
    fixed = {name for name in BOOTSTRAP if not name.startswith(("Let Metal wire", "wired-memory limit"))}
    return [op for op in result.ops if op.name in fixed or op.name.startswith(("Let Metal wire", "wired-memory limit"))]


def servers_without(*names):
    servers = copy.deepcopy(hosts.DEFAULTS["kitty_servers"])
    for name in names:
        servers[name]["enabled"] = False
    return {"kitty_servers": servers}


def test_brand_new_mac_gets_the_whole_bootstrap_in_order_before_anything_else():
    names = [op.name for op in plan(hosts.macos_new()).ops]
    assert names[: len(BOOTSTRAP)] == BOOTSTRAP
    assert "Install Homebrew packages" in names[len(BOOTSTRAP) :]


def test_command_line_tools_are_installed_through_softwareupdate_like_homebrews_installer():
    (command,) = plan(hosts.macos_new()).op("Install the Xcode Command Line Tools").commands
    # The placeholder makes softwareupdate list the tools; it is removed however the install ends.
    assert command.startswith(f"touch {macos.CLT_PLACEHOLDER} && trap 'rm -f {macos.CLT_PLACEHOLDER}' EXIT")
    assert "softwareupdate -l" in command and "grep -B 1 -E 'Command Line Tools'" in command
    assert 'softwareupdate -i "$label"' in command
    assert command.endswith("xcode-select --switch /Library/Developer/CommandLineTools")


def test_system_changes_use_sudo_and_homebrew_installs_as_the_admin_user(planned):
    plan(hosts.macos_new())
    for name in BOOTSTRAP:
        arguments, _ = planned[name]
        assert arguments["_sudo"] is (name != "Install Homebrew"), name
    (install,) = plan(hosts.macos_new()).op("Install Homebrew").commands
    assert install == macos.HOMEBREW_INSTALL and install.startswith("NONINTERACTIVE=1 ")


def test_every_brew_command_gets_the_homebrew_prefix_on_path_for_non_login_ssh(planned):
    result = plan(hosts.macos_new())
    fact_paths = [env.get("PATH", "") for command, env in result.executed if "brew" in command]
    assert fact_paths and all(path.startswith(BREW_PATH) for path in fact_paths)
    for name in ("Install Homebrew", "Install Homebrew packages"):
        arguments, _ = planned[name]
        assert arguments["_env"]["PATH"].startswith(BREW_PATH), name


def test_intel_mac_installs_homebrew_with_usr_local_on_path(planned):
    plan(hosts.macos_new(arch="x86_64"))
    arguments, _ = planned["Install Homebrew packages"]
    assert arguments["_env"]["PATH"].startswith("/usr/local/bin:/usr/local/sbin:")


def test_pmset_changes_only_the_settings_that_differ():
    # As shipped: sleep 1, autorestart 0, womp already 1; displaysleep is not managed.
    assert plan(hosts.macos_new()).op("Set the power settings (pmset)").commands == ["pmset -c sleep 0 autorestart 1"]


def test_pmset_with_extra_wanted_settings_sets_them_too():
    data = {"kitty_macos": {**hosts.DEFAULTS["kitty_macos"], "pmset": {"sleep": 0, "displaysleep": 30}}}
    result = plan(hosts.macos_converged(), data=data)
    assert [op.commands for op in bootstrap_ops(result)] == [["pmset -c displaysleep 30"]]


def test_wired_limit_is_total_memory_less_the_reserve_and_survives_reboots(planned):
    result = plan(hosts.macos_new())
    # 256 GiB less the 24 GiB reserve.
    assert result.op("Let Metal wire 237568 MiB (iogpu.wired_limit_mb)").commands == [
        "sysctl iogpu.wired_limit_mb=237568"
    ]
    arguments, commands = planned["wired-memory limit at boot: install (new)"]
    assert arguments["_sudo"] is True
    (upload,) = [command for command in commands if isinstance(command, FileUploadCommand)]
    assert upload.dest == macos.WIRED_LIMIT_PLIST
    daemon = plistlib.loads(upload.src.getvalue().encode())
    assert daemon["Label"] == macos.WIRED_LIMIT_LABEL
    assert daemon["ProgramArguments"] == ["/usr/sbin/sysctl", "iogpu.wired_limit_mb=237568"]
    assert daemon["RunAtLoad"] is True
    strings = [str(command) for command in commands if isinstance(command, StringCommand)]
    ownership = [c for c in strings if c.startswith(("chown", "chmod"))]
    assert ownership == [f"chown root:wheel {macos.WIRED_LIMIT_PLIST}", f"chmod 644 {macos.WIRED_LIMIT_PLIST}"]
    # Loaded now (it sets the same limit once more), and at every boot after; never kept alive.
    assert [c for c in strings if "launchctl bootstrap system" in c]
    assert "KeepAlive" not in daemon


def test_a_configured_wired_limit_wins_over_the_reserve():
    data = {"kitty_macos": {**hosts.DEFAULTS["kitty_macos"], "wired_limit_mb": 230000}}
    result = plan(hosts.macos_converged(), data=data)
    assert [op.name for op in bootstrap_ops(result)] == [
        "Let Metal wire 230000 MiB (iogpu.wired_limit_mb)",
        "wired-memory limit at boot: reload (its definition changed)",
    ]


def test_converged_mac_plans_no_bootstrap_step():
    assert bootstrap_ops(plan(hosts.macos_converged())) == []


def test_a_mac_with_xcode_instead_of_the_tools_is_left_alone():
    facts = hosts.macos_converged()
    facts["xcode-select -p"] = "/Applications/Xcode.app/Contents/Developer"
    assert bootstrap_ops(plan(facts)) == []


def test_stop_policy_names_the_commands_instead_of_installing():
    data = {"kitty_macos": {**hosts.DEFAULTS["kitty_macos"], "command_line_tools": "stop"}}
    with pytest.raises(PyinfraError, match=r"(?s)Command Line Tools are missing.*sudo softwareupdate -i"):
        plan(hosts.macos_new(), data=data)


def test_the_manuals_four_servers_are_refused_on_a_192_gib_mac_before_anything_else(monkeypatch):
    asked = []
    record = harness._record_commands
    monkeypatch.setattr(harness, "_record_commands", lambda host: asked.append(record(host)) or asked[0])
    with pytest.raises(PyinfraError) as refused:
        plan(hosts.macos_new(memory_gib=192))
    message = str(refused.value)
    assert "do not fit in GPU memory" in message and "f16" in message and "217.3" in message
    assert "q4 + summary + vision" in message
    # Stopped at the budget: not a single fact of the bootstrap or of a later step was gathered.
    commands = [command for command, _ in asked[0]]
    assert any("hw.memsize" in command for command in commands)
    assert not any(word in command for command in commands for word in ("xcode-select", "pmset", "brew"))


def test_without_the_q4_server_a_192_gib_mac_is_bootstrapped():
    result = plan(hosts.macos_new(memory_gib=192), data=servers_without("q4"))
    # 192 GiB less the 24 GiB reserve.
    assert result.op("Let Metal wire 172032 MiB (iogpu.wired_limit_mb)").commands == [
        "sysctl iogpu.wired_limit_mb=172032"
    ]


def test_a_macos_without_the_wired_limit_setting_is_refused_by_name():
    facts = hosts.macos_converged()
    facts["sysctl hw.memsize iogpu.wired_limit_mb"] = [f"hw.memsize: {256 * 1024**3}"]
    with pytest.raises(PyinfraError, match="needs macOS 14 or later"):
        plan(facts)


def test_an_application_only_mac_gets_no_gpu_budget_or_wired_limit():
    result = plan(hosts.macos_new(memory_gib=16), groups=("application",))
    assert [op.name for op in bootstrap_ops(result)] == BOOTSTRAP[:3]
    assert not any("hw.memsize" in command for command, _ in result.executed)


def test_linux_hosts_skip_the_bootstrap_and_the_budget():
    result = plan(hosts.linux())
    assert not any("sysctl" in command or "pmset" in command for command, _ in result.executed)
    assert not any(name in BOOTSTRAP for name in (op.name for op in result.ops))


def test_pmset_output_is_read_per_power_profile():
    output = [
        "Battery Power:",
        " sleep                1",
        " displaysleep         2",
        "AC Power:",
        " Sleep On Power Button 1",
        " sleep                0 (sleep prevented by powerd)",
        " hibernatefile        /var/vm/sleepimage",
        " womp                 1",
    ]
    assert macos.parse_pmset(output) == {
        "Battery Power": {"sleep": 1, "displaysleep": 2},
        "AC Power": {"Sleep On Power Button": 1, "sleep": 0, "womp": 1},
    }


SOFTWAREUPDATE_LIST = """\
Software Update Tool

Finding available software
Software Update found the following new or updated software:
* Label: Command Line Tools for Xcode-15.3
\tTitle: Command Line Tools for Xcode, Version: 15.3, Size: 707501KiB, Recommended: YES,
* Label: Command Line Tools for Xcode-16.0
\tTitle: Command Line Tools for Xcode, Version: 16.0, Size: 751394KiB, Recommended: YES,
* Label: macOS Sonoma 14.7.1-23H222
\tTitle: macOS Sonoma 14.7.1, Version: 14.7.1, Size: 1234567KiB, Recommended: YES, Action: restart,
"""


def run_clt_install(tmp_path, listing: str):
    """The planned install command, run by sh against stub softwareupdate and xcode-select."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    placeholder = tmp_path / "placeholder"
    (tmp_path / "listing").write_text(listing)
    for tool, behaviour in {
        # Like the real one: it lists the tools only while the placeholder exists.
        "softwareupdate": f'if [ "$1" = -l ]; then test -e {placeholder} && cat {tmp_path}/listing; '
        f'else echo "softwareupdate $*" >> {log}; fi',
        "xcode-select": f'echo "xcode-select $*" >> {log}',
    }.items():
        (bin_dir / tool).write_text(f"#!/bin/sh\n{behaviour}\n")
        (bin_dir / tool).chmod(0o755)
    (command,) = plan(hosts.macos_new()).op("Install the Xcode Command Line Tools").commands
    command = command.replace(macos.CLT_PLACEHOLDER, str(placeholder))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=30)
    calls = log.read_text().splitlines() if log.exists() else []
    return done, calls, placeholder


def test_clt_install_picks_the_newest_tools_label_and_removes_the_placeholder(tmp_path):
    done, calls, placeholder = run_clt_install(tmp_path, SOFTWAREUPDATE_LIST)
    assert done.returncode == 0, done.stderr
    assert calls == [
        "softwareupdate -i Command Line Tools for Xcode-16.0",
        "xcode-select --switch /Library/Developer/CommandLineTools",
    ]
    assert not placeholder.exists()


def test_clt_install_fails_by_name_when_softwareupdate_offers_no_tools(tmp_path):
    done, calls, placeholder = run_clt_install(tmp_path, "Software Update Tool\n\nNo new software available.\n")
    assert done.returncode != 0
    assert "softwareupdate offers no Command Line Tools" in done.stderr
    assert calls == [] and not placeholder.exists()


# FileVault: a locked disk after a power cut means no LaunchDaemon until someone types the password.


def filevault(policy: str) -> dict:
    return {"kitty_macos": {**hosts.DEFAULTS["kitty_macos"], "filevault": policy}}


def test_filevault_on_is_warned_about_in_the_plan_and_changes_nothing(caplog):
    result = plan(hosts.macos_converged(filevault=True))
    assert "FileVault is on: after a power cut this Mac waits at the unlock screen" in caplog.text
    assert "kitty_macos.filevault" in caplog.text
    assert bootstrap_ops(result) == []


def test_filevault_off_plans_no_warning(caplog):
    plan(hosts.macos_converged())
    assert "FileVault" not in caplog.text


def test_filevault_refuse_stops_before_the_bootstrap_reads_anything_else(monkeypatch):
    asked = []
    record = harness._record_commands
    monkeypatch.setattr(harness, "_record_commands", lambda host: asked.append(record(host)) or asked[0])
    with pytest.raises(PyinfraError, match=r"FileVault is on.*\(kitty_macos.filevault is 'refuse'\)"):
        plan(hosts.macos_new(filevault=True), data=filevault("refuse"))
    commands = [command for command, _ in asked[0]]
    assert any("fdesetup status" in command for command in commands)
    assert not any(word in command for command in commands for word in ("xcode-select", "pmset", "brew"))


def test_filevault_refuse_lets_an_unencrypted_mac_through():
    names = [op.name for op in plan(hosts.macos_new(), data=filevault("refuse")).ops]
    assert names[: len(BOOTSTRAP)] == BOOTSTRAP


def test_filevault_ignore_does_not_even_ask(caplog):
    result = plan(hosts.macos_converged(filevault=True), data=filevault("ignore"))
    assert not any("fdesetup" in command for command, _ in result.executed)
    assert "FileVault" not in caplog.text


def test_the_health_table_gets_the_same_warning_from_one_function():
    facts = hosts.macos_converged(filevault=True)
    with harness.prepared(facts) as (_state, host, _calls), ctx_host.use(host):
        cfg = config.load(host.data)
        mac = harness.simulated_platform("macos", "admin", "arm64")
        linux = harness.simulated_platform("linux", "admin", "x86_64")
        warning = macos.unattended_restart_warning(cfg, mac)
        assert warning and warning.startswith("FileVault is on")
        assert macos.unattended_restart_warning(cfg, linux) is None
        assert macos.unattended_restart_warning(config.load({**hosts.DEFAULTS, **filevault("ignore")}), mac) is None


@pytest.mark.parametrize(
    ("output", "state"),
    [
        (["FileVault is On."], "on"),
        (["FileVault is Off."], "off"),
        (["Encryption in progress: Percent completed = 42.1"], "on"),
        (["Decryption in progress: Percent completed = 3.0"], "off"),
        (["FileVault is Off, but will be enabled after the next login by admin."], "on"),
        (["FileVault is On.", "Deferred enablement appears to be active for user 'admin'."], "on"),
        ([], None),
    ],
)
def test_fdesetup_status_is_read_as_on_off_or_unknown(output, state):
    assert macos.FileVault().process(output) == state


# A stock Mac: the admin needs a password for sudo, and Homebrew's installer needs sudo.

SECRET = "s3cr3t 'pass\"word $(reboot)"


@pytest.fixture
def sudo_password(monkeypatch):
    """This run's sudo password as pyinfra holds it after --same-sudo-password asked for it."""
    monkeypatch.setattr(harness, "Config", lambda: Config(SUDO_PASSWORD=SECRET))
    return SECRET


def password_mac() -> dict:
    facts = hosts.macos_new()
    facts["sudo -n -l mkdir"] = "no"
    return facts


def test_with_the_runs_sudo_password_homebrew_installs_through_pyinfras_askpass(sudo_password, planned, caplog):
    result = plan(password_mac())
    assert [op.name for op in result.ops][: len(BOOTSTRAP)] == BOOTSTRAP
    (install,) = result.op("Install Homebrew").commands
    assert install == (
        f"env SUDO_ASKPASS={hosts.ASKPASS_PATH} PYINFRA_SUDO_PASSWORD='*MASKED*' {macos.HOMEBREW_INSTALL}"
    )
    # What the host really gets: the password in this one command's environment, shell-quoted.
    arguments, (raw,) = planned["Install Homebrew"]
    assert arguments["_sudo"] is False
    assert raw.get_raw_value() == (
        f"env SUDO_ASKPASS={hosts.ASKPASS_PATH} PYINFRA_SUDO_PASSWORD={shlex.quote(SECRET)} {macos.HOMEBREW_INSTALL}"
    )
    # Nowhere else: not in a planned command, a fact command, pyinfra's output.
    assert not any(SECRET in command for command in result.commands)
    assert not any(SECRET in command for command, _ in result.executed)
    assert not any(SECRET in str(env) for _, env in result.executed)
    assert SECRET not in caplog.text


def test_pyinfras_askpass_helper_holds_no_password_and_serves_it_from_the_environment(tmp_path):
    # The script pyinfra creates on the host (pyinfra.connectors.util), run here as it runs there.
    create = ASKPASS_COMMAND.format(str(tmp_path), SUDO_ASKPASS_ENV_VAR)
    made = subprocess.run(["sh", "-c", create], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    helper = made.stdout.strip()
    assert made.returncode == 0 and helper.startswith(f"{tmp_path}/pyinfra-sudo-askpass-")
    assert SECRET not in open(helper).read()
    env = {"PATH": "/usr/bin:/bin", SUDO_ASKPASS_ENV_VAR: SECRET}
    # sudo -A runs it with the prompt as its only argument.
    served = subprocess.run([helper, "Password:"], env=env, capture_output=True, text=True)
    assert served.stdout == f"{SECRET}\n"


def test_the_installer_sees_the_askpass_helper_and_runs_noninteractive(sudo_password, planned, tmp_path):
    """The planned command run by sh, with a stub curl that serves a stand-in installer.

    The stand-in does what Homebrew's install.sh does with SUDO_ASKPASS set
    (`/usr/bin/sudo -A`, which runs $SUDO_ASKPASS): it runs the helper and records what it got.
    """
    plan(password_mac())
    _, (raw,) = planned["Install Homebrew"]
    helper = subprocess.run(
        ["sh", "-c", ASKPASS_COMMAND.format(str(tmp_path), SUDO_ASKPASS_ENV_VAR)], capture_output=True, text=True
    ).stdout.strip()
    bin_dir, seen = tmp_path / "bin", tmp_path / "seen"
    bin_dir.mkdir()
    installer = f'echo "NONINTERACTIVE=$NONINTERACTIVE" > {seen}; "$SUDO_ASKPASS" "Password:" >> {seen}\n'
    # The stub writes the stand-in where `curl -o FILE` is told to; the deploy checks its sha256 first.
    (bin_dir / "curl").write_text(
        f'#!/bin/sh\nwhile [ "$1" != -o ]; do shift; done\ncat >"$2" <<\'EOF\'\n{installer}EOF\n'
    )
    (bin_dir / "curl").chmod(0o755)
    stand_in = hashlib.sha256(installer.encode()).hexdigest()
    command = raw.get_raw_value().replace(hosts.ASKPASS_PATH, helper).replace(macos.HOMEBREW_INSTALL_SHA256, stand_in)
    done = subprocess.run(
        ["sh", "-c", command], env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert seen.read_text() == f"NONINTERACTIVE=1\n{SECRET}\n"


def test_an_installer_that_differs_from_its_pinned_sha256_is_not_run(tmp_path):
    """Homebrew/install is pinned to a commit and its sha256: anything else served is refused, not run."""
    seen = tmp_path / "seen"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(f'#!/bin/sh\nwhile [ "$1" != -o ]; do shift; done\necho "touch {seen}" >"$2"\n')
    (bin_dir / "curl").chmod(0o755)
    assert f"/Homebrew/install/{macos.HOMEBREW_INSTALL_COMMIT}/install.sh" in macos.HOMEBREW_INSTALL
    done = subprocess.run(["sh", "-c", macos.HOMEBREW_INSTALL], env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 1 and "differs from its pinned sha256: not run" in done.stderr
    assert not seen.exists()


def test_without_a_sudo_password_the_error_shows_the_command_that_asks_for_it():
    with pytest.raises(PyinfraError) as refused:
        plan(password_mac())
    message = str(refused.value)
    assert "sudo asks 'admin' for a password, which this run does not have" in message
    assert "  pyinfra inventory.py deploy.py --same-sudo-password" in message


def test_a_password_sudo_refuses_is_reported_before_anything_is_installed(sudo_password):
    facts = password_mac()
    facts["/usr/bin/id -u"] = {"success": False, "stderr": "sudo: 3 incorrect password attempts"}
    with pytest.raises(PyinfraError, match="sudo did not accept the password for 'admin'"):
        plan(facts)
