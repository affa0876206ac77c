"""The GPU memory budget on the manual's models and real sizes, and the config rules it relies on."""

import pytest

from tasks import config
from tasks.config import model_lock
from tasks.system.memory_budget import (
    GIB,
    MIB,
    BudgetError,
    budget,
    context_warnings,
    kv_cache_bytes,
    server_needs,
    wired_limit_mb,
)
from tests.unit.data import DEFAULTS, host_data

MAC_192 = 192 * GIB


def cfg_with(*disabled, **changes):
    data = host_data(**changes)
    for name in disabled:
        data["kitty_servers"][name]["enabled"] = False
    return config.load(data)


def error_of(data) -> str:
    with pytest.raises(config.ConfigError) as raised:
        config.load(data)
    return str(raised.value)


def test_kv_cache_follows_the_models_dims_and_the_total_ctx_size():
    cfg = config.load(DEFAULTS)
    q4, summary, vision = cfg.servers["q4"], cfg.servers["summary"], cfg.servers["vision"]
    # 2 (K and V) x 80 layers x 8 KV heads x 128 x 16384 tokens x 2 bytes (f16).
    assert kv_cache_bytes(cfg.models[q4.model], q4) == 5 * GIB
    assert kv_cache_bytes(cfg.models[summary.model], summary) == 1 * GIB
    assert kv_cache_bytes(cfg.models[vision.model], vision) == round(3.875 * GIB)


def test_parallel_slots_share_the_context_instead_of_multiplying_it():
    cfg = config.load(DEFAULTS)
    q4 = cfg.servers["q4"]
    assert q4.parallel == 4
    single = q4.model_copy(update={"parallel": 1})
    assert kv_cache_bytes(cfg.models[q4.model], q4) == kv_cache_bytes(cfg.models[q4.model], single)


def test_a_configured_kv_estimate_replaces_the_dims():
    cfg = cfg_with(kitty_servers__q4__kv_cache_gib=2.5)
    q4 = cfg.servers["q4"]
    assert kv_cache_bytes(cfg.models[q4.model], q4) == round(2.5 * GIB)


def test_weights_count_every_shard_and_the_vision_projector():
    needs = {need.server: need for need in server_needs(config.load(DEFAULTS))}
    assert needs["f16"].weights == 4 * 35_300_000_000
    assert needs["vision"].weights == 16_500_000_000 + 860_000_000
    assert needs["q4"].compute == round(1.5 * GIB)


def test_the_manuals_four_servers_do_not_fit_a_192_gib_mac():
    result = budget(config.load(DEFAULTS), MAC_192)
    assert result.limit == 172032 * MIB
    assert not result.fits
    assert result.table() == "\n".join(
        [
            "Metal may wire 168.0 GiB (iogpu.wired_limit_mb=172032) of this Mac's 192.0 GiB",
            "server       model               weights GiB  KV GiB  compute GiB  total GiB",
            "q4           athene-v2-agent-q4         44.1     5.0          1.5       50.6",
            "f16          llama-3.3-70b-f16         131.5     5.0          1.5      138.0",
            "summary      hermes-summary              4.6     1.0          1.5        7.1",
            "vision       gemma-3-27b-vision         16.2     3.9          1.5       21.5",
            "all enabled                                                            217.3",
        ]
    )
    assert result.verdict() == (
        "does NOT fit: 217.3 GiB needed, 168.0 GiB allowed, more than the Mac's whole memory (192.0 GiB)\n"
        "these fit together: q4 + summary + vision (79.3 GiB); f16 + summary + vision (166.6 GiB)"
    )


def test_the_f16_engine_cannot_share_a_192_gib_mac_with_the_q4_orchestrator():
    result = budget(cfg_with("summary", "vision"), MAC_192)
    assert not result.fits and result.fitting_combinations() == [("q4",), ("f16",)]


def test_without_q4_the_rest_fits_a_192_gib_mac_with_little_to_spare():
    result = budget(cfg_with("q4"), MAC_192)
    assert result.fits
    assert result.verdict() == "fits: 166.6 GiB of 168.0 GiB, 1.4 GiB spare"


def test_without_f16_the_rest_fits_a_192_gib_mac_easily():
    assert budget(cfg_with("f16"), MAC_192).verdict() == "fits: 79.3 GiB of 168.0 GiB, 88.7 GiB spare"


def test_a_clearly_over_full_mac_is_refused_and_told_that_nothing_fits():
    result = budget(cfg_with("q4", "summary", "vision"), 64 * GIB)
    assert not result.fits
    assert result.verdict().endswith("no enabled server fits on its own")


def test_all_four_fit_a_512_gib_mac():
    assert budget(config.load(DEFAULTS), 512 * GIB).fits


def test_wired_limit_defaults_to_memory_less_the_reserve_and_a_configured_one_wins():
    assert wired_limit_mb(config.load(DEFAULTS), MAC_192) == 192 * 1024 - 24 * 1024
    assert wired_limit_mb(cfg_with(kitty_macos__reserve_gib=8), MAC_192) == 184 * 1024
    assert wired_limit_mb(cfg_with(kitty_macos__wired_limit_mb=180000), MAC_192) == 180000


def test_a_wired_limit_beyond_the_memory_is_refused():
    with pytest.raises(BudgetError, match=r"wired_limit_mb \(300000\) is more than the Mac's memory \(196608 MiB\)"):
        budget(cfg_with(kitty_macos__wired_limit_mb=300000), MAC_192)


def test_a_reserve_that_leaves_nothing_is_refused():
    with pytest.raises(BudgetError, match="reserve_gib .* leaves nothing"):
        budget(cfg_with(kitty_macos__reserve_gib=192), MAC_192)


def test_unknown_sizes_and_dims_are_named():
    data = host_data()
    data["kitty_models"]["hermes-summary"]["files"] = [{"name": "x.gguf"}]
    for dim in ("n_layers", "n_kv_heads", "head_dim"):
        del data["kitty_models"]["hermes-summary"][dim]
    with pytest.raises(BudgetError) as raised:
        server_needs(config.load(data))
    message = str(raised.value)
    assert "kitty_models.hermes-summary.files[0]: give size or approx_gb" in message
    assert "kitty_servers.summary: lock model 'hermes-summary' (lock_models.py reads its shape" in message
    assert "give n_layers, n_kv_heads and head_dim on it, or kv_cache_gib on the server" in message


# The shape from the GGUF header, as the models lock records it (the tiny model's real header).
SMOL_SHAPE = {
    "architecture": "llama",
    "block_count": 30,
    "head_count": 9,
    "head_count_kv": 3,
    "embedding_length": 576,
    "context_length": 8192,
}


def locked_hermes(tmp_path, shape: dict, drop_dims: bool = True) -> dict:
    """Host data whose Hermes model gets `shape` from a lock (and, with drop_dims, no hand-typed dims)."""
    data = host_data()
    model = data["kitty_models"]["hermes-summary"]
    if drop_dims:
        for dim in ("n_layers", "n_kv_heads", "head_dim"):
            del model[dim]
    entry = {
        "repo": model["repo"],
        "revision": model["revision"],
        "commit": "c" * 40,
        "files": {model["files"][0]["name"]: {"size": 4_920_000_000, "sha256": None, "gguf": shape}},
    }
    path = tmp_path / "models.lock.json"
    model_lock.write(path, {"hermes-summary": entry})
    data["kitty_model_policy"] = {**data["kitty_model_policy"], "lock_file": str(path)}
    return data


def test_the_kv_cache_is_sized_from_the_gguf_header_in_the_lock(tmp_path):
    cfg = config.load(locked_hermes(tmp_path, SMOL_SHAPE))
    summary = cfg.servers["summary"]
    # 2 x 30 layers x 3 KV heads x (576 / 9 = 64) x ctx x 2 bytes: the tiny model's real shape.
    assert kv_cache_bytes(cfg.models["hermes-summary"], summary) == 2 * 30 * 3 * 64 * summary.ctx_size * 2


def test_a_key_length_in_the_header_is_the_head_dimension(tmp_path):
    cfg = config.load(locked_hermes(tmp_path, {**SMOL_SHAPE, "key_length": 128}))
    summary = cfg.servers["summary"]
    assert kv_cache_bytes(cfg.models["hermes-summary"], summary) == 2 * 30 * 3 * 128 * summary.ctx_size * 2


def test_hand_typed_dims_override_the_header(tmp_path):
    cfg = config.load(locked_hermes(tmp_path, SMOL_SHAPE, drop_dims=False))
    summary = cfg.servers["summary"]
    assert kv_cache_bytes(cfg.models["hermes-summary"], summary) == 2 * 32 * 8 * 128 * summary.ctx_size * 2


def test_a_ctx_size_beyond_the_trained_context_is_warned_about(tmp_path):
    data = locked_hermes(tmp_path, SMOL_SHAPE)
    assert context_warnings(config.load(data)) == []
    data["kitty_servers"]["summary"]["ctx_size"] = 16384
    (warning,) = context_warnings(config.load(data))
    assert warning.startswith("kitty_servers.summary.ctx_size: 16384 is more than model 'hermes-summary' was trained")
    assert "(8192 tokens, from its GGUF header)" in warning


def test_disabled_servers_are_not_budgeted():
    assert [need.server for need in server_needs(cfg_with("f16", "vision"))] == ["q4", "summary"]


# Config rules for the fields the budget and the macOS bootstrap read.


def test_model_dims_are_all_or_none():
    data = host_data()
    del data["kitty_models"]["hermes-summary"]["head_dim"]
    assert "kitty_models.hermes-summary: give all of n_layers, n_kv_heads, head_dim or none (missing: head_dim)" in (
        error_of(data)
    )


def test_model_dims_must_be_positive():
    data = host_data()
    data["kitty_models"]["hermes-summary"]["n_layers"] = 0
    assert "kitty_models.hermes-summary.n_layers" in error_of(data)


def test_kv_estimate_must_be_positive():
    assert "kitty_servers.q4.kv_cache_gib" in error_of(host_data(kitty_servers__q4__kv_cache_gib=0))


def test_command_line_tools_policy_is_install_or_stop():
    assert "macos.command_line_tools" in error_of(host_data(kitty_macos__command_line_tools="ask"))


def test_pmset_values_are_non_negative_integers_under_plain_names():
    assert "macos.pmset.sleep" in error_of(host_data(kitty_macos__pmset={"sleep": -1}))
    assert "bad name" in error_of(host_data(kitty_macos__pmset={"sleep; reboot": 0}))


def test_reserve_cannot_be_negative_and_wired_limit_must_be_positive():
    assert "macos.reserve_gib" in error_of(host_data(kitty_macos__reserve_gib=-1))
    assert "macos.wired_limit_mb" in error_of(host_data(kitty_macos__wired_limit_mb=0))


def test_unknown_macos_setting_is_a_typo():
    assert "macos.reserve_gb: unknown setting (a typo?)" in error_of(host_data(kitty_macos__reserve_gb=24))
