"""Logs that rotate: every log in kitty_paths.logs_dir, by the platform's own tool.

macOS: newsyslog (/etc/newsyslog.d/kitty.conf), run hourly by launchd's
com.apple.newsyslog. Linux: logrotate (/etc/logrotate.d/kitty), run by its
systemd timer. Size and count come from `kitty_logs`.

A rotation never stops a server. llama-server reopens nothing: it handles
SIGINT and SIGTERM only, and the default action of SIGHUP would end it. On
Linux logrotate copies the log and truncates it in place (copytruncate),
which works because systemd opened it with O_APPEND (`append:`): the server
writes on at the start of the emptied file, the path the health table names.
newsyslog cannot truncate in place: it renames the log and signals no one
(flag N), so a running job writes to `<log>.0` until its next (re)start. The
new, empty log it creates is root:wheel unless the line names its owner, and
launchd opens a job's log as the job's user: the line names the admin as owner
and, with a service account, its group with group write (mode 664), so the
servers (service account) and colima (admin) can both open their logs again.
"""

from __future__ import annotations

from pyinfra.api import deploy

from tasks.config import KittyConfig
from tasks.engine import host_file
from tasks.host.platform import Platform
from tasks.system import prerequisites, service_account

NEWSYSLOG_CONF = "/etc/newsyslog.d/kitty.conf"
LOGROTATE_CONF = "/etc/logrotate.d/kitty"


def config_path(plat: Platform) -> str:
    return {"newsyslog": NEWSYSLOG_CONF, "logrotate": LOGROTATE_CONF}[plat.log_rotator]


def render(cfg: KittyConfig, plat: Platform, group: str | None = None) -> str:
    """`group`: the logs folder's group that the service account writes through (service_account.logs_group)."""
    template = {"newsyslog": "newsyslog.conf.j2", "logrotate": "logrotate.conf.j2"}[plat.log_rotator]
    return host_file.render(
        template,
        logs_dir=cfg.paths.logs_dir,
        max_size_mb=cfg.logs.max_size_mb,
        keep=cfg.logs.keep,
        owner=plat.user,
        group=group or "",
        mode="664" if group else "644",
    )


@deploy("Log rotation")
def rotate(cfg: KittyConfig, plat: Platform) -> None:
    if plat.log_rotator == "logrotate" and "logrotate" not in cfg.packages.apt:
        # The prerequisites install it when kitty_packages.apt lists it (the default); data
        # that drops it from the list still gets it. Its systemd timer runs it daily.
        prerequisites.install_apt_missing(
            ["logrotate"], plat, refresh_name="Refresh the apt index for logrotate", install_name="Install logrotate"
        )
    host_file.content(
        name=f"Rotate the KITTY logs ({plat.log_rotator})",
        path=config_path(plat),
        text=render(cfg, plat, service_account.logs_group(cfg)),
        mode="644",
        user="root",
        _sudo=plat.sudo,
    )
