#!/bin/sh
# Make one model file present and verified. Installed by kitty-ops (tasks/models.py).
#
#   model-fetch.sh HF MODELS_DIR DIR REPO REVISION FILE SHA256|-
#
# FILE is downloaded with `hf download` into a staging folder on the same
# volume, hashed, and only then renamed over MODELS_DIR/DIR/FILE, so a bad or
# partial download never takes the final path and a good file already there
# is never lost. A file already at the final path is hashed first and kept
# when it is the right one. The hash is recorded in a stamp next to the file
# (size, mtime, sha256) so that later converges check only stat data.
#
# The environment carries the HF_* settings (endpoint, offline, telemetry off).
# POSIX sh with BSD-safe tools: macOS runs it with /bin/sh (bash 3.2); tested
# under dash, busybox sh (busybox's applets as the only userland) and bash.
set -eu

hf=$1 models_dir=$2 dir=$3 repo=$4 revision=$5 file=$6 expected=$7
final=$models_dir/$dir/$file
stamp=$models_dir/$dir/.kitty/$file.stamp
staging=$models_dir/.kitty-staging/$dir
name="[model $dir/$file]"

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
# The ModelFileStates fact (tasks/facts.py) reads them the same way.
stat_of() { stat -c '%s %Y' "$1" 2>/dev/null || stat -f '%z %m' "$1"; }
write_stamp() {
    mkdir -p "$(dirname "$stamp")"
    echo "$1 $(stat_of "$final")" >"$stamp.tmp"
    mv "$stamp.tmp" "$stamp"
}
matches() { [ "$expected" = - ] || [ "$1" = "$expected" ]; }

if [ -f "$final" ]; then
    echo "$name hashing the file in place ..."
    actual=$(sha256_of "$final") || { echo "$name FAILED: cannot read $final" >&2; exit 1; }
    if matches "$actual"; then
        write_stamp "$actual"
        echo "$name verified: sha256 $actual"
        exit 0
    fi
    echo "$name sha256 $actual is not the pinned $expected: downloading it again"
fi

# Leftovers of an interrupted download are never resumed by hf: remove them.
if [ -d "$staging" ]; then find "$staging" -name '*.incomplete' -type f -exec rm -f {} +; fi
mkdir -p "$staging" "$(dirname "$final")"
rm -f "$staging/$file"

echo "$name downloading $repo@$revision ..."
"$hf" download "$repo" "$file" --revision "$revision" --local-dir "$staging" --quiet >/dev/null &
pid=$!
# hf shows no byte progress when not on a terminal: report the growing
# download every KITTY_PROGRESS_INTERVAL seconds, and notice its end within a second.
interval=${KITTY_PROGRESS_INTERVAL:-10}
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

echo "$name verifying sha256 ..."
actual=$(sha256_of "$staging/$file") || { echo "$name FAILED: cannot read $staging/$file" >&2; exit 1; }
if ! matches "$actual"; then
    rm -f "$staging/$file"
    echo "$name FAILED: sha256 mismatch for $dir/$file: expected $expected, got $actual" >&2
    echo "$name the downloaded file was removed; ${final} was left as it was" >&2
    exit 1
fi
mv -f "$staging/$file" "$final"
write_stamp "$actual"
echo "$name verified: sha256 $actual"
