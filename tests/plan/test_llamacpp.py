"""llama.cpp plans: the exact configure line per platform, build only what is missing, `current` switched,
and a tag re-pointed upstream noticed and built beside the old build.

Planned for the inference role only: llama.cpp is its concern.
"""

import copy
import logging

import pytest
from pyinfra.api.exceptions import PyinfraError

from tasks import config
from tasks.inference import llamacpp
from tests.plan import hosts, inference_facts, llamacpp_facts, observability_facts
from tests.plan.harness import plan as plan_deploy
from tests.plan.harness import simulated_platform

ROOT = "/opt/kitty/llama.cpp"
GIT_URL = "https://github.com/ggml-org/llama.cpp.git"
MAC = simulated_platform("macos", "admin", "arm64")
LINUX = simulated_platform("linux", "admin", "x86_64")
B11434 = llamacpp_facts.UPSTREAM["b11434"]
MOVED = "abcdef0123456789abcdef0123456789abcdef01"


def plan(facts, data=None):
    return plan_deploy(facts, data=data, groups=("inference",))


def linux_converged() -> dict:
    """A Linux inference host with llama.cpp, the model files and the servers converged."""
    return {
        **llamacpp_facts.converged(hosts.DEFAULTS, os="linux", user="admin"),
        **inference_facts.converged(hosts.DEFAULTS, os="linux", user="admin"),
        **observability_facts.converged(hosts.DEFAULTS, os="linux", user="admin"),
        **hosts.hf_venv("admin"),
        **hosts.linux(installed=hosts.APT_PACKAGES),
    }


def pinned(ref="b11434", **settings) -> llamacpp.Build:
    """The build of `ref` at the commit the simulated upstream names."""
    return llamacpp.wanted_build(config.load(data(ref=ref, **settings)), LINUX, llamacpp_facts.UPSTREAM.get(ref))


def data(**llamacpp_settings) -> dict:
    values = copy.deepcopy(hosts.DEFAULTS)
    values["kitty_llamacpp"].update(llamacpp_settings)
    return values


def llama_ops(result) -> list[str]:
    """The names of the planned llama.cpp operations (servers restarting after them are another step's)."""
    prefixes = (
        "llama.cpp",
        "logs folder",
        "Build llama.cpp",
        "Tiny model",
        "Prove llama.cpp",
        "Point current",
        "Remove old llama.cpp build",
    )
    return [op.name for op in result.ops if op.name.startswith(prefixes)]


def proving(ref: str = "b11434") -> list[str]:
    """The operations that prove a new build computes, between its build and `current`."""
    return [
        "llama.cpp smoke test folder",
        "Tiny model for proving builds",
        "llama.cpp smoke test script",
        f"Prove llama.cpp {ref} computes on this host",
    ]


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


def test_linux_builds_portable_cpu_code_unless_told_native():
    # A VM can advertise AVX-512/AMX it does not let run: -march=native there crashes on the first token.
    portable = llamacpp.wanted_build(config.load(hosts.DEFAULTS), LINUX)
    assert portable.cmake_args[-2:] == ["-DGGML_NATIVE=OFF", "-DLLAMA_BUILD_NUMBER=11434"]
    native = llamacpp.wanted_build(config.load(data(cpu="native")), LINUX)
    assert not [arg for arg in native.cmake_args if "NATIVE" in arg]
    cuda = llamacpp.wanted_build(config.load(data(backend="cuda")), LINUX)
    # The CPU part portable, the GPU code for the host's own GPU (not seven generic architectures).
    assert cuda.cmake_args[-4:-1] == ["-DGGML_CUDA=ON", "-DGGML_NATIVE=OFF", "-DCMAKE_CUDA_ARCHITECTURES=native"]
    assert len({portable.id, native.id}) == 2


def test_a_mac_builds_native_by_default_and_portable_when_told():
    # Native on a Mac is llama.cpp's own default: the Metal build's id is the one it always was.
    assert (
        llamacpp.wanted_build(config.load(hosts.DEFAULTS), MAC).id
        == llamacpp.wanted_build(config.load(data(cpu="native")), MAC).id
    )
    assert "-DGGML_NATIVE=OFF" in llamacpp.wanted_build(config.load(data(cpu="portable")), MAC).cmake_args


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"cpu": "fast"}, "kitty_llamacpp.cpu"),
        ({"cmake_options": {"GGML_NATIVE": "ON"}}, "GGML_NATIVE is set by kitty_llamacpp.cpu"),
    ],
)
def test_the_cpu_code_is_chosen_by_one_named_field(settings, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(data(**settings))


def test_metal_on_linux_is_refused_by_field():
    with pytest.raises(PyinfraError, match="kitty_llamacpp.backend: 'metal' cannot be built on linux"):
        plan_deploy(hosts.linux(installed=hosts.APT_PACKAGES), data=data(backend="metal"))


def test_fresh_linux_plans_folder_script_build_and_link_in_order():
    facts = {**hosts.hf_venv("admin"), **hosts.linux(installed=hosts.APT_PACKAGES)}
    names = [op.name for op in plan(facts).ops]
    # No git on the fresh host yet: the build script resolves the ref itself.
    start = names.index("llama.cpp install folder")
    assert names[start : start + 3] == ["llama.cpp install folder", "logs folder", "llama.cpp build script"]
    assert names[start + 3] == "Build llama.cpp b11434 (cpu)"
    # The servers' flags are checked against the new build before `current` moves to it.
    assert names[start + 4] == "Check the servers' flags against llama-server b11434"
    assert names[start + 5 : start + 9] == proving()
    assert names[start + 9].startswith("Point current at b11434-cpu-")
    assert names[start + 10] == "models folder"
    assert " b11434 - -DCMAKE_BUILD_TYPE=Release " in plan(facts).op("Build llama.cpp b11434 (cpu)").commands[0]


def test_converged_host_plans_no_llama_cpp_work():
    assert plan(linux_converged()).ops == []


def test_options_are_part_of_the_build_identity():
    base = llamacpp.wanted_build(config.load(hosts.DEFAULTS), LINUX)
    other = llamacpp.wanted_build(config.load(data(cmake_options={"GGML_LTO": "ON"})), LINUX)
    moved = llamacpp.wanted_build(config.load(data(ref="b11500")), LINUX)
    assert len({base.id, other.id, moved.id}) == 3


def test_a_deleted_binary_is_rebuilt_in_place():
    facts = linux_converged()
    wanted = pinned()
    facts.update(llamacpp_facts.builds(ROOT, wanted.id, [(wanted.id, False)]))
    result = plan(facts)
    # A rebuilt binary proves itself again before servers run on it.
    assert llama_ops(result) == ["Build llama.cpp b11434 (cpu)", *proving()]
    assert f" {wanted.id} b11434 {B11434} " in build_command(result)
    assert "('sh /opt/kitty/llama.cpp/build.sh " in build_command(result)


def test_changed_ref_builds_beside_the_old_one_and_switches_current():
    facts = linux_converged()
    old = pinned()
    result = plan(facts, data=data(ref="b11434-kitty1"))
    new = pinned("b11434-kitty1")
    assert llama_ops(result) == [
        "Build llama.cpp b11434-kitty1 (cpu)",
        *proving("b11434-kitty1"),
        f"Point current at {new.id}",
    ]
    link = result.op(f"Point current at {new.id}").commands
    assert link == [f"rm -f {ROOT}/current", f"ln -s {ROOT}/builds/{new.id} {ROOT}/current"]
    assert not any(old.id in command for command in result.commands if "rm -rf" in command)


def test_only_the_newest_builds_are_kept():
    facts = linux_converged()
    wanted = pinned()
    installed = [(wanted.id, True), ("old-1", True), ("old-2", True), ("old-3", True)]
    facts.update(llamacpp_facts.builds(ROOT, wanted.id, installed))
    removed = [op.name for op in plan(facts).ops]
    assert removed == ["Remove old llama.cpp build old-3"]


def test_the_build_it_replaces_is_kept_for_rollback():
    facts = linux_converged()
    facts.update(llamacpp_facts.builds(ROOT, "previous", [("newer", True), ("previous", True), ("oldest", True)]))
    names = [op.name for op in plan(facts, data=data(keep_builds=2)).ops]
    assert "Remove old llama.cpp build previous" not in names
    assert {"Remove old llama.cpp build newer", "Remove old llama.cpp build oldest"} <= set(names)


def test_a_tag_moved_upstream_is_said_loudly_and_built_beside_the_old_build(caplog):
    facts = linux_converged()
    old = pinned()
    facts.update(llamacpp_facts.upstream(GIT_URL, "b11434", MOVED))
    with caplog.at_level(logging.WARNING):
        result = plan(facts)
    moved = llamacpp.wanted_build(config.load(hosts.DEFAULTS), LINUX, MOVED)
    assert moved.id != old.id and moved.id.endswith("-abcdef012345")
    assert llama_ops(result) == ["Build llama.cpp b11434 (cpu)", *proving(), f"Point current at {moved.id}"]
    assert f" {moved.id} b11434 {MOVED} " in build_command(result)
    assert "llama.cpp b11434 moved upstream: built from df1938a8801b, now abcdef012345" in caplog.text
    # The old build stays for rollback.
    assert not [command for command in result.commands if f"builds/{old.id}" in command and "rm -" in command]


def test_the_peeled_commit_of_an_annotated_tag_is_the_one_built():
    facts = linux_converged()
    facts.update(llamacpp_facts.upstream(GIT_URL, "b11434", B11434, annotated=True))
    assert plan(facts).ops == []


def test_a_build_made_before_commits_were_in_ids_is_kept_when_its_commit_is_current():
    facts = linux_converged()
    legacy = llamacpp.wanted_build(config.load(hosts.DEFAULTS), LINUX)
    facts.update(llamacpp_facts.builds(ROOT, legacy.id, [(legacy.id, True)], {legacy.id: B11434}))
    facts.update(llamacpp_facts.current_link(ROOT, legacy.id, user="admin", group="admin"))
    assert llama_ops(plan(facts)) == []


def test_an_unreachable_git_server_keeps_the_installed_build_with_a_warning(caplog):
    facts = linux_converged()
    facts.update(llamacpp_facts.upstream(GIT_URL, "b11434", None))
    with caplog.at_level(logging.WARNING):
        assert plan(facts).ops == []
    assert f"keeping build {pinned().id}" in caplog.text and "Could not resolve host" in caplog.text


def test_a_full_commit_sha_is_built_without_asking_the_git_server():
    facts = linux_converged()
    result = plan(facts, data=data(ref=B11434))
    assert not [command for command, _ in result.executed if "ls-remote" in command]
    command = build_command(result)
    wanted = llamacpp.wanted_build(config.load(data(ref=B11434)), LINUX)
    assert wanted.id.startswith(B11434 + "-cpu-") and f" {wanted.id} {B11434} {B11434} " in command


def test_a_ref_the_git_server_does_not_have_is_refused_by_field():
    facts = linux_converged()
    facts[f"git_url={GIT_URL}; ref=b99999;"] = ["reachable"]
    with pytest.raises(PyinfraError, match="kitty_llamacpp.ref: 'b99999' is neither a tag nor a branch of"):
        plan(facts, data=data(ref="b99999"))


# --- The servers' flags, checked against the build they will run on ---------------------------


def with_extra_args(values: dict, server: str, extra: list[str]) -> dict:
    values = copy.deepcopy(values)
    values["kitty_servers"][server]["extra_args"] = extra
    return values


def test_an_unknown_flag_is_refused_at_plan_time_naming_server_field_flag_and_build():
    facts = linux_converged()
    with pytest.raises(
        PyinfraError, match="kitty_servers.summary.extra_args: --no-such-flag is not a flag of llama-server b11434"
    ):
        plan(facts, data=with_extra_args(hosts.DEFAULTS, "summary", ["--no-such-flag"]))


def test_known_extra_flags_and_their_values_pass(caplog):
    caplog.set_level(logging.INFO)
    facts = linux_converged()
    result = plan(facts, data=with_extra_args(hosts.DEFAULTS, "summary", ["--cache-type-k", "q8_0", "--slots"]))
    assert [op.name for op in result.ops if op.name.startswith("server ")] == [
        "server summary: reload (its definition changed)"
    ]
    assert "--cache-type-k added (q8_0); --slots added" in caplog.text


def test_an_existing_build_that_dropped_a_managed_flag_is_refused_before_current_moves():
    """Switching to a build already on the host: checked from its flags.txt, before anything runs."""
    facts = linux_converged()
    other = pinned("b11434-kitty1")
    facts.update(llamacpp_facts.builds(ROOT, pinned().id, [(other.id, True), (pinned().id, True)]))
    without = [flag for flag in llamacpp_facts.FLAGS if flag not in ("-fa", "--flash-attn")]
    facts.update(llamacpp_facts.flags(ROOT, other.id, without))
    q4 = [n for n, s in config.load(hosts.DEFAULTS).enabled_servers().items() if s.flash_attn]
    assert q4, "the defaults give some server --flash-attn"
    with pytest.raises(
        PyinfraError,
        match=f"kitty_servers.{q4[0]}.flash_attn: --flash-attn is not a flag of llama-server b11434-kitty1",
    ):
        plan(facts, data=data(ref="b11434-kitty1"))


def test_a_new_build_is_checked_on_the_host_between_the_build_and_the_switch():
    result = plan(linux_converged(), data=data(ref="b11434-kitty1"))
    names = [op.name for op in result.ops]
    check = "Check the servers' flags against llama-server b11434-kitty1"
    assert names.index(check) == names.index("Build llama.cpp b11434-kitty1 (cpu)") + 1
    prove = "Prove llama.cpp b11434-kitty1 computes on this host"
    assert names.index(prove) > names.index(check)
    assert names.index(f"Point current at {pinned('b11434-kitty1').id}") == names.index(prove) + 1
    (command,) = result.op(check).commands
    assert f"grep -qxF -e --ctx-size {ROOT}/builds/{pinned('b11434-kitty1').id}/flags.txt" in command
    assert "kitty_servers.summary.ctx_size: --ctx-size is not a flag of llama-server b11434-kitty1" in command


def test_unknown_flags_name_the_field_that_sets_them():
    cfg = config.load(with_extra_args(hosts.DEFAULTS, "summary", ["--seed", "-1", "--bogus=1"]))
    errors = llamacpp.unknown_flags(cfg, set(llamacpp_facts.FLAGS), "b11434")
    assert errors == [
        "kitty_servers.summary.extra_args: --seed is not a flag of llama-server b11434",
        "kitty_servers.summary.extra_args: --bogus is not a flag of llama-server b11434",
    ]
