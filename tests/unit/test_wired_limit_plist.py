"""The boot-time LaunchDaemon for the Metal wired limit, rendered and parsed back key by key."""

import plistlib

from tasks.system import macos


def daemon(limit_mb=172032) -> dict:
    return plistlib.loads(macos.render_wired_limit_plist(limit_mb).encode())


def test_it_is_a_one_shot_root_job_that_sets_the_limit_at_load():
    assert daemon() == {
        "Label": "com.kitty.iogpu-wired-limit",
        # An absolute path: launchd jobs get no PATH worth relying on.
        "ProgramArguments": ["/usr/sbin/sysctl", "iogpu.wired_limit_mb=172032"],
        "RunAtLoad": True,
        "StandardOutPath": "/var/log/com.kitty.iogpu-wired-limit.log",
        "StandardErrorPath": "/var/log/com.kitty.iogpu-wired-limit.log",
        "WorkingDirectory": "/",
        "ExitTimeOut": 5,
        "ProcessType": "Interactive",
    }


def test_no_keep_alive_so_launchd_does_not_rerun_it_in_a_loop():
    assert "KeepAlive" not in daemon()


def test_the_label_matches_the_file_name_launchd_loads_it_from():
    assert macos.WIRED_LIMIT_PLIST == f"/Library/LaunchDaemons/{daemon()['Label']}.plist"


def test_the_limit_is_rendered_as_a_plain_integer():
    assert daemon(237568.0)["ProgramArguments"][1] == "iogpu.wired_limit_mb=237568"


def test_rendering_is_stable_so_a_converged_mac_sees_no_change():
    assert macos.render_wired_limit_plist(172032) == macos.render_wired_limit_plist(172032)
    assert macos.render_wired_limit_plist(172032) != macos.render_wired_limit_plist(172033)
