#!/usr/bin/env bash
# The proof of `backend: cuda`, copied into .device/ by benchmarks/cuda_proof.py: llama.cpp b11434
# built by the deploy's own build script with the deploy's own CMake arguments for `backend: cuda`
# (tasks/llamacpp.wanted_build), then proven by the deploy's own smoke test on the tiny model with
# every layer on the GPU, then refused with the GPU hidden. Needs OUT (a folder for the logs).
set -uo pipefail
cd "$(dirname "$0")" || exit 1
exec > >(tee "$OUT/run.log") 2>&1
echo "== machine"; nproc; nvidia-smi -L; nvcc --version | tail -n 2; cmake --version | head -n 1
(gcc --version || cc --version) | head -n 1; git --version || echo "no git"
root=/tmp/kitty/llama.cpp
id=$(cat build-id.txt)
mapfile -t args <cmake-args.txt
mkdir -p "$root" /tmp/mirror
started=$(date +%s)
if command -v git >/dev/null; then
    cp -r llama.cpp.git /tmp/mirror/llama.cpp.git
    echo "== build (templates/llama-build.sh) $id"
    sh ../templates/llama-build.sh "$root" file:///tmp/mirror/llama.cpp.git "$OUT" 16 llama-server "$id" b11434 \
        df1938a8801b302befed6c8854aca45fe547ed08 "${args[@]}" | grep -v '^\[llama.cpp .*\]   [0-9]*%$'
else
    echo "== build (no git here: cmake with the same arguments) $id"
    mkdir -p /tmp/src && tar -xzf llama-src.tar.gz -C /tmp/src
    cmake -S /tmp/src -B /tmp/work "${args[@]}" >"$OUT/configure.log" 2>&1 || { tail -n 30 "$OUT/configure.log"; exit 1; }
    cmake --build /tmp/work --target llama-server -j 16 >"$OUT/build.log" 2>&1 || { tail -n 30 "$OUT/build.log"; exit 1; }
    mkdir -p "$root/builds/$id/bin" && cp /tmp/work/bin/llama-server "$root/builds/$id/bin/"
fi
echo "== built in $(($(date +%s) - started)) s"
grep -m 3 "CMAKE_CUDA_ARCHITECTURES\|CUDA Toolkit found\|Including CUDA" "$OUT"/*.log || true
"$root/builds/$id/bin/llama-server" --version
echo "== smoke test (templates/llama-smoke.sh): 999 GPU layers asked, backend cuda"
sh ../templates/llama-smoke.sh "$root/builds/$id" "$PWD/kitty-smoke-v1.gguf" "$OUT/smoke.log" 999 cuda portable 300
echo "smoke exit: $?"
cat "$root/builds/$id/smoke.json" 2>/dev/null
grep -E "using device|offloaded|CUDA0 model buffer|CUDA0 KV" "$OUT/smoke.log" | head -n 8
echo "== the same build with the GPU hidden (CUDA_VISIBLE_DEVICES empty): must be refused as computing on the CPU"
sh ../templates/llama-smoke.sh "$root/builds/$id" "$PWD/kitty-smoke-v1.gguf" "$OUT/smoke-hidden.log" 999 cuda portable 120 \
    CUDA_VISIBLE_DEVICES=
echo "smoke exit with the GPU hidden: $?"
echo "== total $(($(date +%s) - started)) s"
