#!/bin/sh
# Make one model file present and verified. Installed by kitty-ops (tasks/inference/models.py).
#
#   model-fetch.sh MODELS_DIR DIR FILE SHA256|- SIZE|- curl URL
#   model-fetch.sh MODELS_DIR DIR FILE SHA256|- SIZE|- hf HF REPO REVISION
#
# SHA256 is the hash the file must have: pinned in the lock or group data, or
# the one its stamp recorded when it was first verified; `-`: none known yet.
# A file already at the final path is hashed first and kept (re-stamped) only
# when it has that hash; otherwise it is fetched again. Either way the new
# bytes go to a staging file on the same volume, are checked (size, GGUF
# magic, sha256) and only then renamed over MODELS_DIR/DIR/FILE, so a bad or
# partial download never takes the final path and a good file there is never
# lost. The stamp (sha256 size mtime) next to the file lets later converges
# check stat data only.
#
# curl: the resolve URL at the locked commit, into DIR/FILE.part under the
# staging folder, continued with an HTTP Range request (`curl -C -`) when a
# partial from an earlier, interrupted run is there. The partial is kept only
# while its source is the same (URL, size, sha256 or, without one, the ETag):
# FILE.part.source records it. The token is never on a command line: curl
# reads its Authorization header from KITTY_AUTH_HEADER_FILE (0600). curl
# follows the Hub's redirect to its CDN without that header.
# hf: `hf download` (no resume across runs; the simulated Mac's stand-in).
#
# POSIX sh with BSD-safe tools: macOS runs it with /bin/sh (bash 3.2); tested
# under dash, busybox sh (busybox's applets as the only userland) and bash.
set -eu

models_dir=$1 dir=$2 file=$3 expected=$4 size=$5 method=$6
shift 6
final=$models_dir/$dir/$file
stamp=$models_dir/$dir/.kitty/$file.stamp
staging=$models_dir/.kitty-staging/$dir
part=$staging/$file.part
name="[model $dir/$file]"
interval=${KITTY_PROGRESS_INTERVAL:-10}

# sha256sum on Linux and busybox, shasum on macOS (it has no sha256sum).
sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        out=$(sha256sum "$1") || return 1
    else
        out=$(shasum -a 256 "$1") || return 1
    fi
    echo "${out%% *}"
}
# Size and mtime in seconds: GNU/busybox `stat -c`, else BSD `stat -f`.
# The ModelFileStates fact (tasks/inference/model_facts.py) reads them the same way.
stat_of() { stat -c '%s %Y' "$1" 2>/dev/null || stat -f '%z %m' "$1"; }
size_of() { if [ -f "$1" ]; then set -- "$(stat_of "$1")" && echo "${1%% *}"; else echo 0; fi; }
write_stamp() {
    mkdir -p "$(dirname "$stamp")"
    echo "$1 $(stat_of "$final")" >"$stamp.tmp"
    mv "$stamp.tmp" "$stamp"
}
matches() { [ "$expected" = - ] || [ "$1" = "$expected" ]; }
# A GGUF file starts with the 4 bytes "GGUF": an HTML error page or a proxy's
# login page does not.
is_gguf() {
    case $file in *.gguf) ;; *) return 0 ;; esac
    [ "$(head -c 4 "$1" 2>/dev/null)" = GGUF ]
}
human() { awk -v b="$1" 'BEGIN { u = "B KiB MiB GiB TiB"; split(u, n, " "); i = 1; while (b >= 1024 && i < 5) { b /= 1024; i++ } printf (i == 1 ? "%d %s" : "%.1f %s"), b, n[i] }'; }

if [ -f "$final" ]; then
    echo "$name hashing the file in place ..."
    actual=$(sha256_of "$final") || { echo "$name FAILED: cannot read $final" >&2; exit 1; }
    if matches "$actual"; then
        write_stamp "$actual"
        echo "$name verified: sha256 $actual"
        exit 0
    fi
    echo "$name CORRUPT: sha256 $actual is not the expected $expected: fetching it again (the file in place is kept until the new one is verified)"
fi
mkdir -p "$staging" "$(dirname "$part")" "$(dirname "$final")"

# Poll the growing download every `interval` seconds and print bytes, rate and
# ETA; return when process $1 ends (noticed within a second).
watch_progress() {
    pid=$1 waited=0 last=$(size_of "$2") since=0
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        waited=$((waited + 1)) since=$((since + 1))
        [ $((waited % interval)) -eq 0 ] || continue
        now=$(size_of "$2")
        rate=$(((now - last) / since))
        line="$name $(human "$now")"
        if [ "$size" != - ] && [ "$size" -gt 0 ]; then line="$line of $(human "$size") ($((now * 100 / size))%)"; fi
        line="$line, $(human "$rate")/s"
        if [ "$size" != - ] && [ "$rate" -gt 0 ]; then line="$line, ETA $(((size - now) / rate)) s"; fi
        echo "$line"
        last=$now since=0
    done
}

# A curl of an earlier run that is still writing the partial (its converge was
# killed, its SSH session lost): ours to end, by its recorded PID, and only if
# that PID is still a curl writing this partial.
stop_earlier_curl() {
    [ -f "$part.pid" ] || return 0
    old=$(cat "$part.pid" 2>/dev/null || true)
    rm -f "$part.pid"
    case $old in '' | *[!0-9]*) return 0 ;; esac
    args=$(ps -p "$old" -o args= 2>/dev/null || tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null || true)
    case $args in *curl*"$part"*) ;; *) return 0 ;; esac
    echo "$name stopping the download an earlier run left running (pid $old)"
    kill "$old" 2>/dev/null || true
    n=0
    while kill -0 "$old" 2>/dev/null && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
}

# curl, with the Authorization header from its 0600 file when there is a token.
hub_curl() {
    if [ -n "${KITTY_AUTH_HEADER_FILE:-}" ]; then
        curl -H "@$KITTY_AUTH_HEADER_FILE" "$@"
    else
        curl "$@"
    fi
}

fetch_curl() {
    url=$1
    stop_earlier_curl
    source_id="$url $size $expected"
    if [ "$expected" = - ]; then
        # No sha256 to name the bytes: the server's ETag does (the Hub's X-Linked-Etag first).
        etag=$(hub_curl -sSIL --fail "$url" 2>/dev/null | tr -d '\r' |
            awk 'tolower($1) == "x-linked-etag:" { l = $2 } tolower($1) == "etag:" { e = $2 } END { print (l != "" ? l : e) }') || true
        source_id="$source_id ${etag:--}"
    fi
    if [ -f "$part" ]; then
        if [ "$(cat "$part.source" 2>/dev/null || true)" != "$source_id" ]; then
            echo "$name discarding a partial download of another source"
            rm -f "$part"
        elif [ "$(size_of "$part")" -ge 4 ] && ! is_gguf "$part"; then
            echo "$name discarding a partial download that is not a GGUF file"
            rm -f "$part"
        elif [ "$size" != - ] && [ "$(size_of "$part")" -gt "$size" ]; then
            rm -f "$part"
        fi
    fi
    echo "$source_id" >"$part.source"
    have=$(size_of "$part")
    if [ "$have" -gt 0 ]; then
        echo "$name resuming at $(human "$have") of ${size:--} bytes from $url"
    else
        echo "$name downloading ${size:--} bytes from $url"
    fi
    if [ "$size" != - ] && [ "$have" -eq "$size" ]; then return 0; fi
    # --speed-limit/--speed-time: give up on a stalled connection (the next converge resumes).
    # curl itself in the background (not a function in a subshell): $! is its PID.
    set -- --fail --location --silent --show-error --connect-timeout 30 --speed-limit 1024 --speed-time 120 \
        -C - -o "$part" "$url"
    if [ -n "${KITTY_AUTH_HEADER_FILE:-}" ]; then set -- -H "@$KITTY_AUTH_HEADER_FILE" "$@"; fi
    curl "$@" &
    pid=$!
    echo "$pid" >"$part.pid"
    # The converge was stopped (Ctrl-C, lost SSH session: a progress line that
    # cannot be written ends this script): stop our curl with it. The partial stays.
    trap 'kill "$pid" 2>/dev/null || true' EXIT
    trap 'exit 130' HUP INT TERM PIPE
    watch_progress "$pid" "$part"
    status=0
    wait "$pid" || status=$?
    trap - EXIT HUP INT TERM PIPE
    rm -f "$part.pid"
    if [ "$status" -eq 33 ]; then
        echo "$name the server cannot resume (no Range support): starting again from zero"
        rm -f "$part"
        hub_curl --fail --location --silent --show-error --connect-timeout 30 -o "$part" "$url" || status=$?
        [ "$status" -ne 33 ] || status=0
    fi
    if [ "$status" -ne 0 ]; then
        echo "$name FAILED: curl exited $status after $(human "$(size_of "$part")") (kept: the next converge resumes)" >&2
        exit 1
    fi
}

fetch_hf() {
    hf=$1 repo=$2 revision=$3
    # hf never resumes the leftovers of an interrupted run: remove them.
    find "$staging" -name '*.incomplete' -type f -exec rm -f {} + 2>/dev/null || true
    rm -f "$staging/$file"
    echo "$name downloading $repo@$revision with hf ..."
    "$hf" download "$repo" "$file" --revision "$revision" --local-dir "$staging" --quiet >/dev/null &
    pid=$!
    waited=0
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        waited=$((waited + 1))
        [ $((waited % interval)) -eq 0 ] || continue
        partial=$(find "$staging" -name '*.incomplete' -type f -exec du -k {} + 2>/dev/null | awk '{s += $1} END {print s + 0}')
        if [ "$partial" -gt 0 ]; then echo "$name $((partial / 1024)) MiB so far"; fi
    done
    if ! wait "$pid"; then
        echo "$name FAILED: hf download exited non-zero (repo $repo, revision $revision)" >&2
        exit 1
    fi
    if [ ! -f "$staging/$file" ]; then
        # hf exits 0 when a requested file does not exist at that revision.
        echo "$name FAILED: $file is not in $repo at revision $revision" >&2
        exit 1
    fi
    mv -f "$staging/$file" "$part"
}

case $method in
curl) fetch_curl "$1" ;;
hf) fetch_hf "$1" "$2" "$3" ;;
*) echo "$name FAILED: unknown download method $method" >&2; exit 2 ;;
esac

got=$(size_of "$part")
if ! is_gguf "$part"; then
    head=$(head -c 60 "$part" | tr -c ' -~' '.')
    rm -f "$part" "$part.source"
    echo "$name FAILED: the download is not a GGUF file (it starts with '$head'): removed; ${final} was left as it was" >&2
    exit 1
fi
if [ "$size" != - ] && [ "$got" -ne "$size" ]; then
    rm -f "$part" "$part.source"
    echo "$name FAILED: the download has $got bytes, not the locked $size: removed; ${final} was left as it was" >&2
    exit 1
fi
echo "$name verifying sha256 ..."
actual=$(sha256_of "$part") || { echo "$name FAILED: cannot read $part" >&2; exit 1; }
if ! matches "$actual"; then
    rm -f "$part" "$part.source"
    echo "$name FAILED: sha256 mismatch for $dir/$file: expected $expected, got $actual" >&2
    echo "$name the downloaded file was removed; ${final} was left as it was" >&2
    exit 1
fi
mv -f "$part" "$final"
rm -f "$part.source"
write_stamp "$actual"
echo "$name verified: sha256 $actual"
