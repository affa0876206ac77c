"""kitty_servers.<name>.load_mode: validated, rendered as --load-mode, counted as wired memory when it locks."""

import pytest

from tasks import config
from tasks.inference import llamacpp, server_args
from tasks.system.memory_budget import GIB, budget, server_needs
from tests.unit.data import DEFAULTS, host_data

MAC_192 = 192 * GIB
# What llama-server b11434 accepts after --load-mode (common/arg.cpp): anything else ends it ("invalid value").
B11434_MODES = ("auto", "none", "mmap", "mlock", "mmap+mlock", "dio")


def error_of(data) -> str:
    with pytest.raises(config.ConfigError) as raised:
        config.load(data)
    return str(raised.value)


def argv(cfg, name: str) -> list[str]:
    return server_args.arguments(cfg, name, cfg.servers[name], "/bin/llama-server", "/models")


def test_every_mode_of_the_pinned_build_is_accepted_and_reaches_the_command_line():
    for mode in B11434_MODES:
        cfg = config.load(host_data(kitty_servers__q4__load_mode=mode))
        args = argv(cfg, "q4")
        assert args[args.index("--load-mode") + 1] == mode
        assert args.count("--load-mode") == 1


def test_a_bad_mode_is_refused_naming_the_field_and_the_values():
    message = error_of(host_data(kitty_servers__f16__load_mode="no-mmap"))
    assert "kitty_servers.f16.load_mode: Input should be 'auto', 'none', 'mmap', 'mlock', 'mmap+mlock' or 'dio'" in (
        message
    )


def test_unset_gives_no_flag_so_a_build_without_it_keeps_its_own_default():
    data = host_data()
    del data["kitty_servers"]["q4"]["load_mode"]
    args = argv(config.load(data), "q4")
    assert "--load-mode" not in args and "-lm" not in args


@pytest.mark.parametrize("flag", ["--load-mode", "-lm", "--mlock", "--no-mmap", "--direct-io"])
def test_extra_args_may_not_set_a_load_mode_behind_the_fields_back(flag):
    message = error_of(host_data(kitty_servers__q4__extra_args=[flag, "mmap"] if "load" in flag else [flag]))
    assert f"kitty_servers.q4.extra_args: {flag!r} is set by the field 'load_mode': set that instead" in message


def test_the_flag_is_checked_against_the_builds_flags_and_names_the_field():
    cfg = config.load(host_data(kitty_servers__q4__load_mode="dio"))
    assert ("kitty_servers.q4.load_mode", "--load-mode") in llamacpp.server_flags(cfg)
    older = {flag for _, flag in llamacpp.server_flags(cfg)} - {"--load-mode"}
    assert llamacpp.unknown_flags(cfg, older, "b4000") == [
        f"kitty_servers.{name}.load_mode: --load-mode is not a flag of llama-server b4000"
        for name, srv in cfg.enabled_servers().items()
        if srv.load_mode
    ]


def test_the_manuals_servers_read_their_weights_without_mmap():
    assert {name: srv.load_mode for name, srv in config.load(DEFAULTS).servers.items()} == {
        "q4": "none",
        "f16": "none",
        "summary": "none",
        "vision": "none",
    }


def test_mlock_modes_count_the_models_weights_as_wired_memory_again():
    plain = {n.server: n for n in server_needs(config.load(DEFAULTS))}
    for mode in ("mlock", "mmap+mlock"):
        needs = {n.server: n for n in server_needs(config.load(host_data(kitty_servers__vision__load_mode=mode)))}
        # The model's own file, not the projector (clip loads that itself).
        assert needs["vision"].locked == 16_500_000_000
        assert needs["vision"].total == plain["vision"].total + 16_500_000_000
        assert needs["q4"].locked == 0 and needs["q4"] == plain["q4"]
    for mode in ("auto", "none", "mmap", "dio"):
        needs = {n.server: n for n in server_needs(config.load(host_data(kitty_servers__vision__load_mode=mode)))}
        assert needs["vision"].locked == 0


def test_an_mlocked_f16_no_longer_fits_where_it_did_and_the_table_shows_why():
    def cfg(mode):
        data = host_data(kitty_servers__f16__load_mode=mode)
        data["kitty_servers"]["q4"]["enabled"] = False
        return config.load(data)

    assert budget(cfg("none"), MAC_192).fits
    locked = budget(cfg("mmap+mlock"), MAC_192)
    assert not locked.fits
    table = locked.table().splitlines()
    head = ["server", "model", "weights", "GiB", "KV", "GiB", "compute", "GiB", "mlock", "GiB", "total", "GiB"]
    assert table[1].split() == head
    assert table[2].split() == ["f16", "llama-3.3-70b-f16", "131.5", "5.0", "1.5", "131.5", "269.5"]
    # Without an mlock mode anywhere, the table has no mlock column.
    assert "mlock" not in budget(cfg("none"), MAC_192).table()


def test_an_mlock_mode_on_linux_is_warned_about_since_the_unit_cannot_lock():
    from tasks.system.memory_budget import mlock_warnings

    cfg = config.load(host_data(kitty_servers__q4__load_mode="mmap+mlock", kitty_servers__f16__load_mode="mmap"))
    assert mlock_warnings(cfg, mlock_allowed=True) == []
    (warning,) = mlock_warnings(cfg, mlock_allowed=False)
    assert warning.startswith("kitty_servers.q4.load_mode: mmap+mlock on Linux locks nothing")
