"""llama.cpp plans: the exact configure line per platform, build only what is missing, `current` switched."""

import copy

import pytest
from pyinfra.api.exceptions import PyinfraError

from tasks import config, llamacpp
from tests.plan import hosts, llamacpp_facts
from tests.plan.harness import plan, simulated_platform

ROOT = "/opt/kitty/llama.cpp"
MAC = simulated_platform("macos", "admin", "arm64")
LINUX = simulated_platform("linux", "admin", "x86_64")


def data(**llamacpp_settings) -> dict:
    values = copy.deepcopy(hosts.DEFAULTS)
    values["kitty_llamacpp"].update(llamacpp_settings)
    return values


def build_command(result) -> str:
    ops = [op for op in result.ops if op.name.startswith("Build llama.cpp")]
    assert len(ops) == 1, [op.name for op in result.ops]
    (command,) = ops[0].commands
    return command


def test_macos_configure_line_is_pinned_with_metal_on():
    wanted = llamacpp.wanted_build(config.load(hosts.DEFAULTS), MAC)
    assert wanted.cmake_args == [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DBUILD_SHARED_LIBS=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DGGML_CCACHE=ON",
        "-DGGML_METAL=ON",
        "-DGGML_METAL_EMBED_LIBRARY=ON",
        "-DGGML_BLAS=ON",
        "-DGGML_BLAS_VENDOR=Apple",
        "-DLLAMA_BUILD_NUMBER=11434",
    ]
    assert wanted.id.startswith("b11434-metal-")


def test_fresh_mac_builds_as_the_admin_with_homebrew_on_path():
    result = plan(hosts.macos(installed=hosts.BREW_PACKAGES))
    command = build_command(result)
    assert "-DGGML_METAL=ON" in command and "https://github.com/ggml-org/llama.cpp.git" in command
    assert not command.startswith("sudo")
    assert result.op("Point current at " + llamacpp.wanted_build(config.load(hosts.DEFAULTS), MAC).id)


def test_linux_defaults_to_cpu_and_cuda_when_configured():
    assert llamacpp.wanted_build(config.load(hosts.DEFAULTS), LINUX).backend == "cpu"
    cuda = llamacpp.wanted_build(config.load(data(backend="cuda")), LINUX)
    assert "-DGGML_CUDA=ON" in cuda.cmake_args and "-DGGML_METAL=ON" not in cuda.cmake_args


def test_metal_on_linux_is_refused_by_field():
    with pytest.raises(PyinfraError, match="kitty_llamacpp.backend: 'metal' cannot be built on linux"):
        plan(hosts.linux_converged(), data=data(backend="metal"))


def test_fresh_linux_plans_folder_script_build_and_link_in_order():
    facts = {**hosts.hf_venv("admin"), **hosts.linux(installed=hosts.APT_PACKAGES)}
    names = [op.name for op in plan(facts).ops]
    start = names.index("llama.cpp install folder")
    assert names[start : start + 3] == ["llama.cpp install folder", "logs folder", "llama.cpp build script"]
    assert names[start + 3] == "Build llama.cpp b11434 (cpu)" and names[start + 4].startswith(
        "Point current at b11434-cpu-"
    )
    assert names[start + 5] == "models folder"


def test_converged_host_plans_no_llama_cpp_work():
    assert plan(hosts.linux_converged()).ops == []


def test_options_are_part_of_the_build_identity():
    base = llamacpp.wanted_build(config.load(hosts.DEFAULTS), LINUX)
    other = llamacpp.wanted_build(config.load(data(cmake_options={"GGML_NATIVE": "OFF"})), LINUX)
    moved = llamacpp.wanted_build(config.load(data(ref="b11500")), LINUX)
    assert len({base.id, other.id, moved.id}) == 3


def test_a_deleted_binary_is_rebuilt_in_place():
    facts = hosts.linux_converged()
    wanted = llamacpp.wanted_build(config.load(hosts.DEFAULTS), LINUX)
    facts.update(llamacpp_facts.builds(ROOT, wanted.id, [(wanted.id, False)]))
    result = plan(facts)
    assert [op.name for op in result.ops] == ["Build llama.cpp b11434 (cpu)"]
    assert f" {wanted.id} b11434 " in build_command(result)


def test_changed_ref_builds_beside_the_old_one_and_switches_current():
    facts = hosts.linux_converged()
    old = llamacpp.wanted_build(config.load(hosts.DEFAULTS), LINUX)
    result = plan(facts, data=data(ref="b11434-kitty1"))
    new = llamacpp.wanted_build(config.load(data(ref="b11434-kitty1")), LINUX)
    assert [op.name for op in result.ops] == ["Build llama.cpp b11434-kitty1 (cpu)", f"Point current at {new.id}"]
    link = result.op(f"Point current at {new.id}").commands
    assert link == [f"rm -f {ROOT}/current", f"ln -s {ROOT}/builds/{new.id} {ROOT}/current"]
    assert not any(old.id in command for command in result.commands if "rm -rf" in command)


def test_only_the_newest_builds_are_kept():
    facts = hosts.linux_converged()
    wanted = llamacpp.wanted_build(config.load(hosts.DEFAULTS), LINUX)
    installed = [(wanted.id, True), ("old-1", True), ("old-2", True), ("old-3", True)]
    facts.update(llamacpp_facts.builds(ROOT, wanted.id, installed))
    removed = [op.name for op in plan(facts).ops]
    assert removed == ["Remove old llama.cpp build old-3"]


def test_the_build_it_replaces_is_kept_for_rollback():
    facts = hosts.linux_converged()
    facts.update(llamacpp_facts.builds(ROOT, "previous", [("newer", True), ("previous", True), ("oldest", True)]))
    names = [op.name for op in plan(facts, data=data(keep_builds=2)).ops]
    assert "Remove old llama.cpp build previous" not in names
    assert {"Remove old llama.cpp build newer", "Remove old llama.cpp build oldest"} <= set(names)
