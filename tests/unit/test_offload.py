"""Where a model server's layers are (issue 25): the health wait's sh and tasks/supervise/offload.py
read a load log alike.

The logs are llama-server b11434's own lines at --log-verbosity 4 (src/llama.cpp,
src/llama-model.cpp, common/arg.cpp, ggml-metal): a Metal load that put every layer on
the GPU, a Metal build that Metal gave no device (its daemon's session), a CPU build
asked for GPU layers, a partial offload, and an older start before the running one.
"""

from __future__ import annotations

import pytest

from tasks import config
from tasks.host.platform import Platform
from tasks.supervise import offload
from tests.plan import hosts
from tests.unit.test_host_scripts import SHELLS, WAIT, health_server, needs_shells, run, userland  # noqa: F401

# As common_init() sets llama-server's log: a timestamp and a level letter before each line it logs.
START = "0.00.000.312 I srv  llama_server: initializing ..."
METAL = [
    START,
    "0.00.001.020 I common_params_print_info: build 11434 (df1938a) with Apple clang for arm64-apple-darwin",
    "0.00.004.871 I ggml_metal_device_init: GPU name:   MTL0 (Apple M3 Ultra)",
    "0.00.020.117 I llama_model_load_from_file_impl: using device MTL0 (Apple M3 Ultra) (unknown id) - 475135 MiB free",
    "0.00.201.554 I load_tensors: offloading output layer to GPU",
    "0.00.201.560 I load_tensors: offloading 29 repeating layers to GPU",
    "0.00.201.561 I load_tensors: offloaded 31/31 layers to GPU",
    "0.00.201.900 I load_tensors:   Metal_Mapped model buffer size =   100.57 MiB",
    "0.00.402.001 I srv  llama_server: listening on http://127.0.0.1:8083",
]
# A build (or a session) without a GPU: common/arg.cpp warns while it parses -ngl, before the start line.
NO_DEVICE = [
    "warning: no usable GPU found, --gpu-layers option will be ignored",
    "warning: one possible reason is that llama.cpp was compiled without GPU support",
    "warning: consult docs/build.md for compilation instructions",
    START,
    "0.00.190.004 I load_tensors:   CPU_Mapped model buffer size =   100.57 MiB",
    "0.00.402.001 I srv  llama_server: listening on http://127.0.0.1:8083",
]
PARTIAL = [START, METAL[3], "0.00.201.561 I load_tensors: offloaded 20/31 layers to GPU", METAL[-1]]


@pytest.mark.parametrize(
    ("lines", "asked", "text", "degraded"),
    [
        (METAL, 99, "layers on MTL0 (Apple M3 Ultra) (31/31)", False),
        (METAL, 12, "layers on MTL0 (Apple M3 Ultra) (31/31)", False),
        (NO_DEVICE, 99, "degraded: on CPU (asked for 99 GPU layers)", True),
        (PARTIAL, 99, "degraded: partly on CPU (20/31 layers on MTL0 (Apple M3 Ultra), asked for 99 GPU layers)", True),
        (PARTIAL, 20, "layers on MTL0 (Apple M3 Ultra) (20/31)", False),
        # A start on the GPU, then the running one on the CPU: only the running one counts.
        (METAL + NO_DEVICE, 99, "degraded: on CPU (asked for 99 GPU layers)", True),
        (NO_DEVICE + METAL, 99, "layers on MTL0 (Apple M3 Ultra) (31/31)", False),
        (["rotated away"], 99, "layers: unknown (no load of the running server in its log)", False),
    ],
)
def test_placement_from_the_load_of_the_running_server(lines, asked, text, degraded):
    found = offload.placement(lines, asked)
    assert found.text() == text
    assert found.degraded is degraded


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("lines", "code", "said"),
    [
        (METAL, 0, "[health] q4: layers on MTL0 (Apple M3 Ultra) (31/31)"),
        (NO_DEVICE, 3, "[health] q4: DEGRADED, on CPU (asked for 99 GPU layers)"),
        (METAL + NO_DEVICE, 3, "[health] q4: DEGRADED, on CPU (asked for 99 GPU layers)"),
        (PARTIAL, 3, "[health] q4: DEGRADED, partly on CPU (20/31 layers on MTL0 (Apple M3 Ultra), asked for 99"),
    ],
)
def test_the_health_wait_says_where_the_layers_are(shell, userland, health_server, tmp_path, lines, code, said):  # noqa: F811
    log = tmp_path / "q4.log"
    log.write_text("\n".join(lines) + "\n")
    result = run(shell, userland, [str(WAIT), f"q4|{health_server}/ok|20|{log}|llama-gpu:99"])
    assert result.returncode == code, result.stdout + result.stderr
    assert said in result.stdout
    if code == 3:
        assert result.stdout.rstrip().endswith("[health] serving, but degraded: q4")


@needs_shells
@pytest.mark.parametrize("shell", SHELLS)
def test_the_log_command_keeps_the_running_loads_lines(shell, userland, tmp_path):  # noqa: F811
    log = tmp_path / "q4.log"
    log.write_text("\n".join(METAL + ["request noise"] * 5 + NO_DEVICE) + "\n")
    result = run(shell, userland, ["-c", offload.log_command(str(log))])
    assert offload.placement(result.stdout.splitlines(), 99).text() == "degraded: on CPU (asked for 99 GPU layers)"
    assert "request noise" not in result.stdout


def test_only_servers_that_ask_for_gpu_layers_log_at_trace_verbosity():
    cfg = config.load(hosts.DEFAULTS)
    q4 = cfg.servers["q4"]
    assert offload.arguments(q4) == ["--log-verbosity", "4"]
    assert offload.arguments(q4.model_copy(update={"n_gpu_layers": 0})) == []
    with pytest.raises(config.ConfigError, match="'-lv' is set by the field 'n_gpu_layers'"):
        config.load({**hosts.DEFAULTS, "kitty_servers": {**hosts.DEFAULTS["kitty_servers"], "q4": {
            **hosts.DEFAULTS["kitty_servers"]["q4"], "extra_args": ["-lv", "3"]}}})  # fmt: skip


def test_the_remedy_on_a_mac_daemon_is_the_gui_sessions_launchagent():
    cfg = config.load(hosts.DEFAULTS)
    mac = Platform(os="macos", arch="arm64", user="admin", sudo=True, brew_prefix="/opt/homebrew")
    assert "kitty_launchd.kind = 'agent'" in offload.remedy(cfg, mac)
    cpu = config.load({**hosts.DEFAULTS, "kitty_llamacpp": {**hosts.DEFAULTS["kitty_llamacpp"], "backend": "cpu"}})
    assert "n_gpu_layers to 0" in offload.remedy(cpu, mac)


def test_the_health_table_names_where_the_layers_are_and_fails_a_cpu_fallback_with_the_remedy():
    from tasks.runbook import verify

    cfg = config.load(hosts.DEFAULTS)
    mac = Platform(os="macos", arch="arm64", user="admin", sudo=True, brew_prefix="/opt/homebrew")
    (q4,) = [c for c in verify.checks(cfg, mac, ["inference"]) if c.name == "q4"]
    assert q4.gpu_layers == 999 and q4.log.endswith("llamacpp-q4.log")
    assert "kitty-gpu|server|q4|" in verify.probe_command([q4])
    good = verify.assess(q4, ["http", "200", "0.004", "0"], None, METAL)
    assert good.healthy and good.layers == "layers on MTL0 (Apple M3 Ultra) (31/31)"
    table = verify.render([good])
    assert table[0].endswith("layers") and table[1].endswith("layers on MTL0 (Apple M3 Ultra) (31/31)")
    bad = verify.assess(q4, ["http", "200", "0.004", "0"], None, NO_DEVICE)
    assert bad.state == "degraded: on CPU (asked for 999 GPU layers)" and not bad.healthy
    message = verify.failure_message([bad])
    said = "server q4 (port 8083, degraded: on CPU (asked for 999 GPU layers)): Metal gave the server no device"
    assert said in message
    assert "kitty_launchd.kind = 'agent'" in message
    # The probe's output, as the fact parses it.
    lines = [f"kitty-gpu|server|q4|{line}" for line in NO_DEVICE]
    assert verify.parse_gpu(lines) == {"server q4": NO_DEVICE}


def test_diagnose_names_a_cpu_fallback_with_the_launchagent_remedy():
    from tasks.runbook import diagnose

    cfg = config.load(hosts.DEFAULTS)
    mac = Platform(os="macos", arch="arm64", user="admin", sudo=True, brew_prefix="/opt/homebrew")
    (finding,) = diagnose.gpu_findings("q4", offload.placement(NO_DEVICE, 999), offload.remedy(cfg, mac))
    assert finding.problem == "degraded: on CPU (asked for 999 GPU layers)" and finding.fails
    assert "LaunchAgents in the admin's GUI session" in finding.remedy
    assert diagnose.gpu_findings("q4", offload.placement(METAL, 999), "") == []
