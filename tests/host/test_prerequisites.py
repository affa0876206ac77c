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


def test_ssh_comes_back_after_a_reboot(host, is_macos):
    """Enabled at boot. (That sshd runs now cannot fail over SSH: this suite connects through it.)"""
    if is_macos:
        # Remote Login on: not disabled in the system domain ("false" before macOS 13, "enabled" since).
        disabled = host.run("launchctl print-disabled system").stdout
        state = next(
            (line.split("=>")[1].strip() for line in disabled.splitlines() if '"com.openssh.sshd"' in line), None
        )
        assert state in ("false", "enabled"), f"Remote Login is off at boot (com.openssh.sshd: {state})"
    else:
        assert host.service("ssh").is_enabled, "the ssh service is not enabled at boot"
