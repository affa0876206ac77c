#!/bin/sh
# Wait until each server answers its health URL, all of them polled at once.
# Installed by kitty-ops; runs ON the host, so servers that listen only on the
# host's loopback are reachable even from a laptop's deploy. POSIX sh: macOS
# runs it with /bin/sh (bash 3.2); tested under dash, busybox sh and bash.
#
#   wait-healthy.sh SPEC ...
#   SPEC = NAME|URL|TIMEOUT_S|LOG[|EXPECT[|CHECK]]
#
#   EXPECT  llama (default): 200 healthy, 503 loading (the model is still
#           loading), anything else down.
#           llama-gpu:N: as llama, and once healthy its load in LOG (what follows
#           its last `srv  llama_server: initializing ...` line) must say its N GPU layers are on a GPU
#           (`offloaded A/B layers to GPU`, at --log-verbosity 4); else it is
#           DEGRADED: serving, but on the CPU (tasks/supervise/offload.py reads the same).
#           http: any 2xx healthy, anything else down.
#           tcp: URL is telnet://HOST:PORT; healthy once something accepts a
#           connection there (llama.cpp's rpc-server, which speaks no HTTP).
#   CHECK   a command run with `sh -c` each second while the server is not
#           healthy yet; exit non-zero means the supervisor says the program
#           has died or crash-loops, and the server fails at once instead of at
#           its deadline, with what CHECK printed (exit status, state).
#           CHECK is the rest of SPEC, so it may contain `|`.
#
# Every server is probed once a second. State changes are printed as
# `[health] NAME: STATE (URL)`. A server not healthy by its own deadline (or
# whose CHECK failed) is printed as FAILED with the last 30 lines of LOG.
# Where a llama-gpu server's layers are: `[health] NAME: layers on DEVICE (A/B)`,
# or `[health] NAME: DEGRADED, on CPU (asked for N GPU layers)`.
# Exit 0 when all are healthy, 1 when any failed, 2 for a malformed SPEC,
# 3 when all serve but one is DEGRADED.
set -eu

tmp=$(mktemp -d "${TMPDIR:-/tmp}/kitty-health.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

next_field() {
    case $rest in
    *"|"*) field=${rest%%|*} rest=${rest#*|} ;;
    *) field=$rest rest= ;;
    esac
}

# SPEC -> name url timeout log expect check
parse() {
    rest=$1
    next_field && name=$field
    next_field && url=$field
    next_field && timeout=$field
    next_field && log=$field
    next_field && expect=${field:-llama}
    check=$rest
}

# POSIX sh has no arrays: servers are numbered in argument order, and what
# changes while waiting (the state) lives in $tmp/I.state.
started=$(date +%s)
i=0
for spec in "$@"; do
    i=$((i + 1))
    parse "$spec"
    case $timeout in
    '' | *[!0-9]*)
        echo "[health] malformed spec (TIMEOUT_S must be a number of seconds): $spec" >&2
        exit 2
        ;;
    esac
    case $expect in
    llama | http | tcp | llama-gpu:[1-9]*) ;;
    *)
        echo "[health] malformed spec (EXPECT must be llama, llama-gpu:N, http or tcp): $spec" >&2
        exit 2
        ;;
    esac
    case $expect in llama-gpu:*[!0-9]*)
        echo "[health] malformed spec (llama-gpu:N takes a number of layers): $spec" >&2
        exit 2
        ;;
    esac
    echo waiting >"$tmp/$i.state"
done

# One probe of server I (run in the background): the HTTP code, and whether CHECK passed.
probe() { # I SPEC
    parse "$2"
    if [ "$expect" = tcp ]; then
        # curl's telnet:// connects and sends nothing (stdin is empty); it gives up after
        # a second (exit 28). A connect time other than zero: something accepted it.
        code=$(curl -s -o /dev/null -w '%{time_connect}' --max-time 1 "$url" </dev/null 2>/dev/null) || true
        case $code in *[1-9]*) code=200 ;; *) code=000 ;; esac
    else
        # curl prints 000 when nothing answered.
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null) || true
    fi
    echo "${code:-000}" >"$tmp/$1.code"
    if [ -n "$check" ]; then
        if sh -c "$check" >"$tmp/$1.why" 2>&1; then echo alive; else echo dead; fi >"$tmp/$1.check"
    fi
}

# Where the running server's layers went, from its load log: 0 and "layers on DEVICE (A/B)",
# or 1 and "on CPU (...)". The load may reach the log a moment after /health says 200.
placement() { # LOG ASKED
    tries=0
    while :; do
        n=$(grep -n 'srv  *[^ ]*: initializing [.][.][.]' "$1" 2>/dev/null | tail -n 1 | cut -d: -f1)
        offload=
        device=
        if [ -n "$n" ]; then
            offload=$(tail -n +"$n" "$1" | sed -n 's/.*offloaded \([0-9][0-9]*\/[0-9][0-9]*\) layers to GPU.*/\1/p' | tail -n 1)
            device=$(tail -n +"$n" "$1" | sed -n 's/.*using device \([^ ]* ([^)]*)\).*/\1/p' | head -n 1)
        fi
        [ -n "$offload" ] || [ "$tries" -ge 3 ] && break
        tries=$((tries + 1))
        sleep 1
    done
    if [ -z "$n" ]; then
        echo "layers: unknown (no load of the running server in $1)"
        return 0
    fi
    got=${offload%/*}
    total=${offload#*/}
    wanted=$2
    [ -n "$offload" ] && [ "$wanted" -gt "$total" ] && wanted=$total
    if [ -z "$offload" ] || [ "$got" = 0 ]; then
        echo "on CPU (asked for $2 GPU layers)"
        return 1
    fi
    if [ "$got" -lt "$wanted" ]; then
        echo "partly on CPU ($offload layers on ${device:-the GPU}, asked for $2 GPU layers)"
        return 1
    fi
    echo "layers on ${device:-the GPU} ($offload)"
}

report_failure() { # I REASON
    echo "[health] $name: FAILED, $2. Last lines of $log:"
    tail -n 30 "$log" 2>/dev/null | sed 's/^/[health]   /' || true
    echo failed >"$tmp/$1.state"
    failed="$failed $name"
}

failed=
degraded=
pending=$#
while [ "$pending" -gt 0 ]; do
    # Probes of all pending servers and the one-second tick run side by side:
    # a round takes a second, or as long as the slowest probe (curl gives up at 2 s).
    sleep 1 &
    i=0
    for spec in "$@"; do
        i=$((i + 1))
        case $(cat "$tmp/$i.state") in healthy | failed) ;; *) probe "$i" "$spec" & ;; esac
    done
    wait
    now=$(date +%s)
    i=0
    for spec in "$@"; do
        i=$((i + 1))
        state=$(cat "$tmp/$i.state")
        case $state in healthy | failed) continue ;; esac
        parse "$spec"
        code=$(cat "$tmp/$i.code" 2>/dev/null || echo 000)
        case ${expect%%:*}:$code in
        llama:200 | llama-gpu:200 | http:2?? | tcp:200) new=healthy ;;
        llama:503 | llama-gpu:503) new=loading ;;
        *) new=down ;;
        esac
        if [ "$new" != "$state" ]; then
            echo "[health] $name: $new ($url)"
            echo "$new" >"$tmp/$i.state"
        fi
        if [ "$new" = healthy ]; then
            pending=$((pending - 1))
            case $expect in llama-gpu:*)
                if where=$(placement "$log" "${expect#llama-gpu:}"); then
                    echo "[health] $name: $where"
                else
                    echo "[health] $name: DEGRADED, $where"
                    degraded="$degraded $name"
                fi
                ;;
            esac
        elif [ "$(cat "$tmp/$i.check" 2>/dev/null || echo alive)" = dead ]; then
            why=$(tr '\n' ' ' <"$tmp/$i.why" 2>/dev/null | sed 's/ *$//') || why=
            report_failure "$i" "exited while starting (${why:-its supervisor reports it stopped or crash-looping})"
            pending=$((pending - 1))
        elif [ "$now" -ge $((started + timeout)) ]; then
            report_failure "$i" "not healthy in time (last: $new)"
            pending=$((pending - 1))
        fi
    done
done
if [ -n "$failed" ]; then
    echo "[health] not healthy:$failed"
    exit 1
fi
if [ -n "$degraded" ]; then
    echo "[health] serving, but degraded:$degraded"
    exit 3
fi
