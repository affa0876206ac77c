#!/usr/bin/env python3
"""Prepare the one-off proof of `backend: cuda` on a machine with an NVIDIA GPU (no such machine in CI).

    .venv/bin/python benchmarks/cuda_proof.py        # writes .device/ (git-ignored through .git/info/exclude)
    # then, on the GPU machine, from a copy of the checkout with .device/ beside it:
    OUT=/tmp/out bash .device/cuda-proof.sh

.device/ gets the sandbox's llama.cpp mirror (sandbox/make-llama-mirror.sh), the build id and CMake
arguments the deploy computes for `backend: cuda` on Linux (tasks/llamacpp.wanted_build), the tiny model
(tasks/inference/smoke_model.py) and benchmarks/cuda-proof.sh, which builds with templates/llama-build.sh and proves
the build with templates/llama-smoke.sh (all layers on the GPU, then the GPU hidden: refused).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks import config  # noqa: E402
from tasks.host import platform  # noqa: E402
from tasks.inference import llamacpp, smoke_model  # noqa: E402

B11434 = "df1938a8801b302befed6c8854aca45fe547ed08"


def main() -> None:
    out = ROOT / ".device"
    out.mkdir(exist_ok=True)
    subprocess.run(["bash", str(ROOT / "sandbox" / "make-llama-mirror.sh")], check=True)
    shutil.rmtree(out / "llama.cpp.git", ignore_errors=True)
    shutil.copytree(ROOT / ".sandbox" / "mirrors" / "llama.cpp", out / "llama.cpp.git")
    data = copy.deepcopy(config.read_group_data(ROOT / "group_data"))
    data["kitty_llamacpp"].update({"git_url": "file:///tmp/mirror/llama.cpp.git", "backend": "cuda"})
    linux = platform.Platform(os="linux", arch="x86_64", user="root", sudo=False)
    build = llamacpp.wanted_build(config.load(data), linux, B11434)
    (out / "build-id.txt").write_text(build.id)
    (out / "cmake-args.txt").write_text("\n".join(build.cmake_args) + "\n")
    (out / smoke_model.NAME).write_bytes(smoke_model.content())
    shutil.copy(ROOT / "benchmarks" / "cuda-proof.sh", out / "cuda-proof.sh")
    print(f"{out}: build {build.id}\n  {' '.join(build.cmake_args)}")


if __name__ == "__main__":
    main()
