#!/bin/sh
# Turns the sandbox image (Debian) into the simulated Mac, at every container start,
# then runs sshd in the foreground. Mounted read-only at /macsim (sandbox/macsim).
set -eu
src=/macsim
lib=/usr/local/libexec/macsim
gnu=/usr/libexec/macsim-gnu

if [ ! -e /var/db/macsim/.installed ]; then
    mkdir -p "$lib" "$gnu" /var/db/macsim/launchd/exits /var/log/macsim
    cp "$src"/shims/* "$src/fake_gguf.py" "$lib/"
    chmod 755 "$lib"/*

    # macOS's wheel is gid 0 (Debian calls it root): `chown root:wheel` must work, `root:root` must not.
    sed -i 's/^root:/wheel:/' /etc/group /etc/gshadow

    # BSD flavours of tools whose GNU options scripts wrongly rely on; the GNU ones stay for the shims.
    for tool in stat sed date uname; do
        mv "/usr/bin/$tool" "$gnu/$tool"
    done
    # The BSD stat/uname shims are Python; sed/date wrap GNU's.
    for tool in stat sed date uname; do ln -s "$lib/$tool" "/usr/bin/$tool"; done
    # Mac-only commands, where macOS has them.
    for tool in launchctl pmset xcode-select fdesetup sw_vers shasum git; do ln -sf "$lib/$tool" "/usr/bin/$tool"; done
    rm -f /usr/sbin/sysctl
    ln -s "$lib/sysctl" /usr/sbin/sysctl
    ln -s "$lib/lsof" /usr/sbin/lsof
    # pf's control program (/sbin is /usr/sbin here): the firewall's anchor, never enforced.
    ln -s "$lib/pfctl" /usr/sbin/pfctl
    ln -s "$lib/newsyslog" /usr/sbin/newsyslog
    ln -s "$lib/scutil" /usr/sbin/scutil
    # hostname(1) answers the name the network gave the Mac, which the harness changes (merged /usr: one file).
    rm -f /usr/bin/hostname /bin/hostname
    ln -s "$lib/hostname" /bin/hostname
    echo kitty-studio.local >/var/db/macsim/hostname
    # GNU/Linux-only commands a Mac does not have.
    for tool in timeout systemctl ss apt-get apt apt-cache dpkg-query sha1sum sha224sum sha256sum sha384sum \
        sha512sum md5sum b2sum nproc tac free ip; do
        for dir in /usr/bin /usr/sbin; do rm -f "$dir/$tool"; done
    done

    # launchd's folders; the logs of the simulation are readable and writable by every caller.
    install -d -m 755 -o root -g wheel /Library/LaunchDaemons /Library/Developer/CommandLineTools/usr/bin
    ln -s "$lib/git" /Library/Developer/CommandLineTools/usr/bin/git
    for log in launchctl.jsonl spawns.jsonl brew.jsonl hf.jsonl pfctl.log; do
        : >"/var/log/macsim/$log"
        chmod 666 "/var/log/macsim/$log"
    done
    # A Mac has /Users/Shared, writable by all (sticky).
    install -d -m 1777 /Users /Users/Shared
    # launchd's folders for LaunchAgents; the admin is logged in at the GUI (automatic login),
    # so its gui/<uid> domain exists. Its own ~/Library/LaunchAgents, as on any Mac.
    install -d -m 755 -o root -g wheel /Library/LaunchAgents
    install -d -m 700 -o admin -g admin /home/admin/Library
    install -d -m 755 -o admin -g admin /home/admin/Library/LaunchAgents
    id -u admin >/var/db/macsim/gui-sessions
    # colima's VM takes a while to stop after SIGTERM.
    echo 3 >/var/db/macsim/colima-stop-seconds

    # The admin's login shell is zsh (macOS 10.15+), so every SSH command runs under zsh -c.
    dpkg -i /macsim-debs/*.deb >/dev/null
    chsh -s /bin/zsh admin
    # A fresh Mac's admin gives sudo its password: no NOPASSWD, so a run must bring it
    # (pyinfra --same-sudo-password and its askpass helper). No cached credentials between sessions.
    echo "admin:${MACSIM_ADMIN_PASSWORD:?}" | chpasswd
    printf '%s\n' 'Defaults timestamp_timeout=0' 'admin ALL=(ALL) ALL' >/etc/sudoers.d/admin
    chmod 0440 /etc/sudoers.d/admin

    # Machine facts the harness may change: 256 GiB M3 Ultra, macOS 15, wired limit at its default.
    cat >/var/db/macsim/sysctl.json <<'JSON'
{"hw.memsize": 274877906944, "iogpu.wired_limit_mb": 0, "hw.ncpu": 32, "hw.model": "Mac15,14",
 "kern.ostype": "Darwin", "kern.osrelease": "24.5.0", "kern.osproductversion": "15.5",
 "machdep.cpu.brand_string": "Apple M3 Ultra"}
JSON
    # A fresh Mac's AC profile: sleeps after a minute idle, no restart after a power failure.
    cat >/var/db/macsim/pmset.json <<'JSON'
{"AC Power": {"Sleep On Power Button": 1, "autorestart": 0, "powernap": 1, "networkoversleep": 0,
 "disksleep": 10, "sleep": 1, "hibernatemode": 0, "ttyskeepawake": 1, "displaysleep": 10,
 "tcpkeepalive": 1, "womp": 1}}
JSON
    echo off >/var/db/macsim/filevault
    echo '{}' >/var/db/macsim/hf.json
    chmod 644 /var/db/macsim/*.json /var/db/macsim/hostname /var/db/macsim/gui-sessions /var/db/macsim/colima-stop-seconds

    # Homebrew, installed by the admin as its installer does, with kitty-ops' formulae poured.
    install -d -m 755 -o admin /opt/homebrew /opt/homebrew/bin /opt/homebrew/sbin /opt/homebrew/var
    ln -s "$lib/brew" /opt/homebrew/bin/brew
    su admin -s /bin/sh -c '/opt/homebrew/bin/brew install git cmake ccache hf colima docker docker-compose' >/dev/null 2>&1

    # sshd on the container's own network (the port is published on the machine's 127.0.0.1).
    mkdir -p /etc/macsim /run/sshd
    cat >/etc/macsim/sshd_config <<'CONF'
Port 22
ListenAddress 0.0.0.0
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PrintMotd no
AcceptEnv LANG LC_*
# macOS sshd's PATH for a command session (no /usr/local/bin, no Homebrew).
SetEnv PATH=/usr/bin:/bin:/usr/sbin:/sbin
Subsystem sftp /usr/lib/openssh/sftp-server
CONF
    touch /var/db/macsim/.installed
fi

ssh-keygen -A >/dev/null
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e -f /etc/macsim/sshd_config
