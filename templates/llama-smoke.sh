#!/bin/sh
# Prove that a new llama.cpp build computes on this host before any server runs on it.
# Installed by kitty-ops (tasks/inference/llamacpp.py) as <opt_dir>/llama.cpp/smoke.sh.
#
#   smoke.sh BUILD_DIR MODEL LOG GPU_LAYERS BACKEND CPU TIMEOUT [NAME=VALUE...]
#
# Starts BUILD_DIR/bin/llama-server on a free loopback port (--port 0: the
# kernel picks one, the server names it) with MODEL (a tiny model the deploy
# made: tasks/inference/smoke_model.py), asks for GPU_LAYERS layers on the GPU, waits for
# it to load, asks for one completion, checks that the layers went to the GPU
# when BACKEND has one, and stops it. NAME=VALUE: the servers' environment.
# Success writes BUILD_DIR/smoke.json; the deploy moves `current` only to a build
# that has one. Failure names the signal or error, the tail of the server's log
# (LOG, kept) and the likely cause, and exits 1: nothing else changes.
#
# POSIX sh: macOS runs it with /bin/sh (bash 3.2); tested under dash, busybox sh and bash.
set -u

build_dir=$1 model=$2 log=$3 gpu_layers=$4 backend=$5 cpu=$6 timeout_s=$7
shift 7
id=${build_dir##*/}
server=$build_dir/bin/llama-server
say() { echo "[llama.cpp $id] $*"; }

pid=
stop_server() {
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
        i=$((i + 1))
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# Why it failed, as an operator can act on it.
likely_cause() { # EXIT_STATUS
    if grep -qi 'cuda error\|cudaerror\|no cuda-capable' "$log" 2>/dev/null; then
        echo "the CUDA backend failed: check nvidia-smi, the driver and the CUDA toolkit the build used"
    elif grep -qi 'ggml_metal.*error\|failed to create.*metal\|metal.*not supported' "$log" 2>/dev/null; then
        echo "the Metal backend failed on this Mac: try kitty_llamacpp.backend: cpu to confirm, or another ref"
    elif [ "$1" -gt 128 ]; then
        case $(($1 - 128)) in
        4) # SIGILL
            if [ "$cpu" = native ]; then
                echo "an instruction this CPU does not run: try a portable CPU build (kitty_llamacpp.cpu: portable)"
            else
                echo "an instruction this CPU does not run, even in the portable build (x86-64 needs AVX2, FMA, F16C)"
            fi
            ;;
        7 | 11) # SIGBUS, SIGSEGV
            if [ "$cpu" = native ]; then
                if grep -q 'amx' "$log" 2>/dev/null || grep -q 'amx' /proc/cpuinfo 2>/dev/null; then
                    echo "crashed in a CPU kernel (this CPU advertises AMX, which a VM may not let run):" \
                        "try a portable CPU build (kitty_llamacpp.cpu: portable)"
                else
                    echo "crashed in a CPU kernel: try a portable CPU build (kitty_llamacpp.cpu: portable)"
                fi
            else
                echo "crashed inside llama.cpp at this ref: try another kitty_llamacpp.ref"
            fi
            ;;
        6) echo "llama.cpp aborted (an assertion or error of llama.cpp at this ref; its message is above): try another kitty_llamacpp.ref" ;;
        9) echo "killed (by the kernel's out-of-memory killer, or by hand)" ;;
        *) echo "ended by a signal: see the log above" ;;
        esac
    else
        echo "llama-server refused to start: see the log above"
    fi
}

# Why a GPU build computed on the CPU.
no_gpu_cause() {
    case $backend in
    cuda) echo "CUDA found no usable GPU for this process: check nvidia-smi, the driver, and CUDA_VISIBLE_DEVICES in the servers' env" ;;
    metal) echo "Metal gave this session no device (seen over SSH and in daemons on some Macs): the servers would serve from the CPU" ;;
    *) echo "the $backend backend found no device" ;;
    esac
}

signal_name() { # EXIT_STATUS -> "SIGSEGV (exit 139)" or "exit 1"
    if [ "$1" -gt 128 ]; then
        name=$(kill -l "$(($1 - 128))" 2>/dev/null) || name=$(($1 - 128))
        echo "signal SIG${name#SIG} (exit $1)"
    else
        echo "exit $1"
    fi
}

refuse() { # WHY [EXIT_STATUS [CAUSE]]
    say "REFUSED: this build does not compute on this host: $1"
    say "  last lines of $log:"
    tail -n 25 "$log" 2>/dev/null | sed "s/^/[llama.cpp $id]     /"
    say "  likely cause: ${3:-$(likely_cause "${2:-0}")}"
    say "  \`current\` and every server stay as they were."
    exit 1
}

# The server ended: reap it and refuse with what ended it.
refuse_ended() { # WHAT_IT_WAS_DOING
    status=0
    wait "$pid" || status=$?
    pid=
    refuse "llama-server ended $1: $(signal_name "$status")" "$status"
}

rm -f "$build_dir/smoke.json"
mkdir -p "$(dirname "$log")"
: >"$log"
started=$(date +%s)
deadline=$((started + timeout_s))

say "proving the build: llama-server on a tiny model, $gpu_layers GPU layers asked, one completion ..."
# env runs the server in place of itself: $! is the server's own PID.
env "$@" "$server" --model "$model" --host 127.0.0.1 --port 0 --n-gpu-layers "$gpu_layers" \
    --ctx-size 256 --parallel 1 --log-verbosity 4 >>"$log" 2>&1 </dev/null &
pid=$!

# --log-verbosity 4: llama.cpp prints its devices and "offloaded N/M layers" only at trace level.
# The server names its port once the model is loaded ("listening on http://127.0.0.1:PORT").
port=
while [ -z "$port" ]; do
    kill -0 "$pid" 2>/dev/null || refuse_ended "while loading the model"
    port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$log" | head -n 1)
    [ -n "$port" ] && break
    [ "$(date +%s)" -lt "$deadline" ] || refuse "no model loaded within ${timeout_s}s (hangs)" 0
    sleep 0.2
done
loaded=$(($(date +%s) - started))

# One completion, through every layer: the kernels of each weight type run.
body='{"prompt": "The quick brown fox", "n_predict": 8, "ignore_eos": true, "temperature": 0, "cache_prompt": false}'
answer=$(curl -sS --max-time "$timeout_s" -H 'Content-Type: application/json' -d "$body" \
    "http://127.0.0.1:$port/completion" 2>&1) || {
    sleep 1
    kill -0 "$pid" 2>/dev/null || refuse_ended "during its first completion"
    refuse "no completion: $answer" 0
}
kill -0 "$pid" 2>/dev/null || refuse_ended "after its first completion"
predicted=$(echo "$answer" | sed -n 's/.*"tokens_predicted": *\([0-9][0-9]*\).*/\1/p')
[ "${predicted:-0}" -gt 0 ] || refuse "the completion held no tokens: $(echo "$answer" | cut -c 1-300)" 0

# Where the layers went: llama.cpp prints "offloaded N/M layers to GPU" only when it has a GPU.
offload=$(sed -n 's/.*offloaded \([0-9][0-9]*\/[0-9][0-9]*\) layers to GPU.*/\1/p' "$log" | head -n 1)
device=$(sed -n 's/.*using device \([^ ]* ([^)]*)\).*/\1/p' "$log" | head -n 1)
if [ "$backend" != cpu ] && [ "$gpu_layers" != 0 ]; then
    total=${offload#*/}
    wanted=$gpu_layers
    { [ "$wanted" -lt 0 ] || [ "$wanted" -gt "${total:-0}" ]; } && wanted=${total:-1}
    if [ -z "$offload" ] || [ "${offload%/*}" -lt "$wanted" ] || [ "${offload%/*}" = 0 ]; then
        refuse "the build has the $backend backend but computed on the CPU (asked for $gpu_layers GPU layers, offloaded ${offload:-none})" \
            0 "$(no_gpu_cause)"
    fi
fi
stop_server
took=$(($(date +%s) - started))

# The device's name comes from the driver: no quote or backslash reaches the JSON.
# shellcheck disable=SC1003 # a backslash, not an escaped quote
device_json=$(echo "${device:-cpu}" | tr -d '"\\')
printf '{"model": "%s", "gpu_layers": "%s", "offloaded": "%s", "device": "%s", "load_s": %s, "total_s": %s, "tokens": %s}\n' \
    "${model##*/}" "$gpu_layers" "${offload:-cpu}" "$device_json" "$loaded" "$took" "$predicted" >"$build_dir/smoke.json"
say "proven in ${took}s: loaded in ${loaded}s, $predicted tokens, layers on ${device:-the CPU}${offload:+ ($offload)}"
