#!/bin/sh
# Build one llama.cpp ref into its own prefix. Installed by kitty-ops (tasks/inference/llamacpp.py)
# as <opt_dir>/llama.cpp/build.sh; the exact command it ran is in the build log.
#
#   build.sh ROOT GIT_URL LOGS_DIR JOBS TARGETS BUILD_ID REF COMMIT [CMAKE_ARG...]
#
# TARGETS is comma separated. COMMIT is the commit the deploy resolved REF to
# upstream (`git ls-remote`), or `-` to build whatever REF names once fetched:
# the build checks out exactly COMMIT, so a tag re-pointed upstream between the
# deploy's look-up and this build cannot slip in, and a stale tag in the local
# clone is never used in its place. The new build lands in ROOT/builds/BUILD_ID
# only when every step succeeded, so a failed build never replaces or damages
# the last good one; the deploy switches `current` afterwards. builds/<id>/build.json
# records the ref, the commit and the CMake arguments; builds/<id>/flags.txt the
# flags its llama-server accepts.
#
# POSIX sh: macOS runs it with /bin/sh (bash 3.2); tested under dash, busybox sh and bash.
set -eu

root=$1 git_url=$2 logs_dir=$3 jobs=$4 targets=$5 id=$6 ref=$7 wanted_commit=$8
shift 8
# Targets are plain names (llama-server, ...): split on commas, no globbing.
targets_list=$(echo "$targets" | tr ',' ' ')
log=$logs_dir/llama.cpp-build-$id.log
src=$root/src work=$root/work/$id partial=$root/builds/.$id.partial

mkdir -p "$(dirname "$log")" "$root/builds" "$root/work"
: >"$log"
step=start
say() { echo "[llama.cpp $id] $*"; }
begin() {
    step=$1
    say "$1 ..."
}
# POSIX sh has no ERR trap: on any failed step, `set -e` exits and this runs.
finished=no
on_exit() {
    status=$?
    [ "$finished" = yes ] && return 0
    say "FAILED during: $step (full log: $log)"
    tail -n 40 "$log" | sed "s/^/[llama.cpp $id]   /"
    rm -rf "$partial" "$work.status"
    exit "$status"
}
trap on_exit EXIT

has_commit() { git -C "$src" cat-file -e "$1^{commit}" 2>/dev/null; }
resolves() { git -C "$src" rev-parse --quiet --verify --end-of-options "$ref^{commit}" >/dev/null; }

begin "fetch $ref from $git_url"
# A local mirror (NAS, USB disk) usually belongs to another user: git would
# refuse it as "dubious ownership". The operator chose this URL, so trust it (bare or not),
# in a git config of our own that includes the user's (git before 2.41 takes
# safe.directory only from a global or system file).
case $git_url in
file://* | /*)
    # git config quotes the value itself: the URL is never printed into the file.
    : >"$root/gitconfig"
    # shellcheck disable=SC2088 # git expands the ~ of include.path itself
    git config --file "$root/gitconfig" include.path "~/.gitconfig"
    git config --file "$root/gitconfig" --add safe.directory "${git_url#file://}"
    git config --file "$root/gitconfig" --add safe.directory "${git_url#file://}/.git"
    GIT_CONFIG_GLOBAL=$root/gitconfig
    export GIT_CONFIG_GLOBAL
    ;;
esac
if [ ! -d "$src/.git" ]; then
    git clone --quiet --no-checkout -- "$git_url" "$src" >>"$log" 2>&1
fi
if [ "$wanted_commit" != - ]; then
    # --force: a tag re-pointed upstream replaces the clone's stale copy.
    has_commit "$wanted_commit" || git -C "$src" fetch --quiet --tags --force -- origin >>"$log" 2>&1
    has_commit "$wanted_commit" || git -C "$src" fetch --quiet -- origin "$ref" >>"$log" 2>&1 || true
    if ! has_commit "$wanted_commit"; then
        echo "$git_url has no commit $wanted_commit (what $ref resolved to when the deploy looked)" >>"$log"
        false
    fi
    commit=$wanted_commit
else
    if ! resolves; then
        git -C "$src" fetch --quiet --tags --force -- origin >>"$log" 2>&1
        resolves || git -C "$src" fetch --quiet -- origin "$ref" >>"$log" 2>&1
    fi
    commit=$(git -C "$src" rev-parse --verify --end-of-options "$ref^{commit}")
fi
git -C "$src" -c advice.detachedHead=false checkout --quiet --force --detach "$commit" >>"$log" 2>&1

begin "configure ($commit)"
# ccache keys on paths relative to CCACHE_BASEDIR: builds in other folders still hit.
CCACHE_DIR=${CCACHE_DIR:-$root/ccache} CCACHE_BASEDIR=$root
export CCACHE_DIR CCACHE_BASEDIR
cmake -S "$src" -B "$work" "$@" >>"$log" 2>&1

begin "compile $targets_list"
# Progress: one line each time the build passes another 10%. No pipefail in
# POSIX sh: cmake's own exit status goes through a file.
rm -f "$work.status"
set -f # targets_list is split into words, never globbed
# shellcheck disable=SC2086 # targets_list: one word per target, by design
{ cmake --build "$work" --target $targets_list -j "$jobs" 2>&1 || echo "$?" >"$work.status"; } | tee -a "$log" |
    awk -v prefix="[llama.cpp $id]   " 'match($0, /^\[ *[0-9]+%\]/) {
        pct = substr($0, RSTART + 1, RLENGTH - 2) + 0
        if (pct >= shown + 10 || pct == 100) { shown = pct - pct % 10; print prefix pct "%"; fflush() }
    }'
if [ -s "$work.status" ]; then
    echo "cmake --build exited $(cat "$work.status")" >>"$log"
    false
fi

begin "install into builds/$id"
rm -rf "$partial"
mkdir -p "$partial/bin"
# cp + chmod, not install(1): POSIX, and not every minimal userland has install.
for target in $targets_list; do
    cp "$work/bin/$target" "$partial/bin/$target"
    chmod 755 "$partial/bin/$target"
done
"$partial/bin/llama-server" --version >>"$log" 2>&1
# The flags this llama-server accepts, once per build, from its own --help: the
# deploy checks every server's arguments against them before `current` moves.
# On each line that starts with `-`: the comma-separated spellings before the value.
"$partial/bin/llama-server" --help 2>&1 | awk '/^-/ {
    for (i = 1; i <= NF; i++) { f = $i; more = sub(/,$/, "", f); if (f ~ /^-/) print f; if (!more) break }
}' >"$partial/flags.txt"
# A binary whose --help lists nothing: no file, and the deploy says it cannot check.
[ -s "$partial/flags.txt" ] || { rm -f "$partial/flags.txt" && echo "llama-server --help listed no flags" >>"$log"; }
printf '{"ref": "%s", "commit": "%s", "cmake_args": "%s"}\n' "$ref" "$commit" "$*" >"$partial/build.json"
rm -rf "$root/builds/$id"
mv "$partial" "$root/builds/$id"
# The build folder is large; ccache keeps the next build fast without it.
rm -rf "$work"
finished=yes
version=$("$root/builds/$id/bin/llama-server" --version 2>&1 | grep -i version | head -n 1) || true
say "built $commit: $version"
