"""Prerequisites (manual step 1.3): every package of the host's package manager is installed."""


def test_every_package_is_installed(host, kitty, is_macos):
    if is_macos:
        # A non-login SSH session has no Homebrew on PATH: ask brew by its full path.
        prefix = "/opt/homebrew" if host.system_info.arch == "arm64" else "/usr/local"
        installed = set(host.check_output(f"{prefix}/bin/brew list --formula -1").split())
        missing = [name for name in kitty.packages.brew if name not in installed]
    else:
        missing = [name for name in kitty.packages.apt if not host.package(name).is_installed]
    assert not missing, f"packages not installed: {', '.join(missing)}"


def test_ssh_server_is_running(host, is_macos):
    if is_macos:
        assert host.run("launchctl print system/com.openssh.sshd").rc == 0, "sshd (Remote Login) is not loaded"
    else:
        assert host.service("ssh").is_running, "the ssh service is not running"
