"""Prerequisites planned for simulated fresh and converged macOS and Linux hosts."""

import pytest
from pyinfra.api.exceptions import PyinfraError

from tests.plan import hosts
from tests.plan.harness import plan


def test_fresh_mac_installs_every_brew_package_with_homebrew_on_path():
    result = plan(hosts.macos())
    install = result.op("Install Homebrew packages")
    assert install.commands == [f"brew install {' '.join(hosts.BREW_PACKAGES)}"]
    assert all("sudo" not in command for command in result.commands)


def test_mac_with_some_packages_installs_only_the_missing_ones():
    result = plan(hosts.macos(installed=["git", "cmake"]))
    missing = [name for name in hosts.BREW_PACKAGES if name not in ("git", "cmake")]
    assert result.op("Install Homebrew packages").commands == [f"brew install {' '.join(missing)}"]


def test_converged_mac_plans_nothing():
    assert plan(hosts.macos_converged()).ops == []


def test_intel_mac_uses_the_usr_local_prefix():
    result = plan(hosts.macos(arch="x86_64"))
    paths = [env.get("PATH", "") for command, env in result.executed if "command -v brew" in command]
    assert paths and all(path.startswith("/usr/local/bin:") for path in paths)


def test_apple_silicon_facts_run_with_opt_homebrew_on_path():
    result = plan(hosts.macos_converged())
    paths = [env.get("PATH", "") for command, env in result.executed if "brew list --versions" in command]
    assert paths and all(path.startswith("/opt/homebrew/bin:") for path in paths)


def test_mac_without_homebrew_installs_it_before_the_packages():
    facts = hosts.macos()
    facts["command -v brew"] = ""
    names = [op.name for op in plan(facts).ops]
    assert names.index("Install Homebrew") < names.index("Install Homebrew packages")


def test_mac_without_homebrew_or_passwordless_sudo_or_a_password_stops_with_the_command_that_asks():
    facts = hosts.macos()
    facts["command -v brew"] = ""
    facts["sudo -n -l mkdir"] = "no"
    with pytest.raises(PyinfraError, match="pyinfra inventory.py deploy.py --same-sudo-password"):
        plan(facts)


def test_brew_as_root_is_refused():
    with pytest.raises(PyinfraError, match="refuses to run as root"):
        plan(hosts.macos(user="root"))


def test_fresh_linux_refreshes_apt_then_installs_with_sudo():
    result = plan(hosts.linux())
    assert [op.name for op in result.ops][:2] == ["Refresh the apt index", "Install apt packages"]
    (install,) = result.op("Install apt packages").commands
    assert "apt-get -y" in install and "--no-install-recommends" in install
    assert install.split()[-len(hosts.APT_PACKAGES) :] == hosts.APT_PACKAGES


def test_converged_linux_plans_nothing_not_even_an_apt_update():
    assert plan(hosts.linux_converged()).ops == []


def test_unsupported_os_is_refused_by_name():
    with pytest.raises(PyinfraError, match="unsupported operating system 'FreeBSD'"):
        plan({"uname -s": "FreeBSD", "id -un": "admin"})


def test_linux_without_systemd_is_refused():
    facts = hosts.linux()
    facts["command -v systemctl"] = ""
    with pytest.raises(PyinfraError, match="without systemctl"):
        plan(facts)
