#!/bin/sh
# Runs once inside the image build (no network needed: everything comes from debootstrap).
set -eu

# Each container must get its own identity: systemd generates a machine-id at boot
# when the file is empty, sandbox-init generates SSH host keys before sshd starts.
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -f /etc/ssh/ssh_host_*

# Complete apt sources like a normal install (debootstrap only writes the main suite).
rm -f /etc/apt/sources.list
cat > /etc/apt/sources.list.d/debian.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC

# HTTPS leaves this machine through a TLS proxy whose CA is only in the build
# machine's bundle. Install the certificates the image lacks as local CAs so
# they survive any later update-ca-certificates run (e.g. a ca-certificates upgrade).
mkdir -p /usr/local/share/ca-certificates/kitty-sandbox
python3 - <<'PY'
import re
pem = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
have = set(pem.findall(open("/etc/ssl/certs/ca-certificates.crt").read()))
extra = [c for c in pem.findall(open("/tmp/host-ca-bundle.crt").read()) if c not in have]
for i, cert in enumerate(extra):
    with open(f"/usr/local/share/ca-certificates/kitty-sandbox/host-{i}.crt", "w") as f:
        f.write(cert + "\n")
print(f"setup: {len(extra)} extra CA certificate(s) from the build machine")
PY
update-ca-certificates >/dev/null

# The login the deploy uses: key only (the key is installed per sandbox, never baked), passwordless sudo.
# '*' rather than a locked '!' password: sshd refuses locked accounts even for keys when PAM is off.
useradd --create-home --shell /bin/bash --password '*' admin
install -d -m 0700 -o admin -g admin /home/admin/.ssh
echo 'admin ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/admin
chmod 0440 /etc/sudoers.d/admin
chmod 0644 /etc/ssh/sshd_config.d/50-sandbox.conf /etc/systemd/system/sandbox-init.service
chmod 0755 /usr/local/sbin/sandbox-init

systemctl enable sandbox-init.service ssh.service

# Units that make no sense in a container (no consoles, no devices/kernel modules to
# manage, read-only kernel knobs, the network belongs to the build machine) and would
# fail or hang and leave the system "degraded". apt's timers are masked because a
# background apt run holds the dpkg lock and makes converges flaky.
systemctl mask \
    getty.target console-getty.service getty@.service serial-getty@.service \
    systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
    systemd-udev-trigger.service systemd-udev-settle.service systemd-hwdb-update.service \
    systemd-sysctl.service systemd-modules-load.service systemd-remount-fs.service \
    systemd-firstboot.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
    sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
    sys-fs-fuse-connections.mount dev-hugepages.mount \
    systemd-networkd.service systemd-networkd.socket systemd-networkd-wait-online.service \
    systemd-resolved.service systemd-timesyncd.service \
    systemd-journald-audit.socket systemd-pstore.service \
    apt-daily.timer apt-daily-upgrade.timer \
    >/dev/null

# debootstrap leaves its downloaded packages behind
rm -f /var/cache/apt/archives/*.deb
