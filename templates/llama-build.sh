#!/usr/bin/env bash
# Build one llama.cpp ref into its own prefix. Installed by kitty-ops (tasks/llamacpp.py)
# as <opt_dir>/llama.cpp/build.sh; the exact command it ran is in the build log.
#
#   build.sh ROOT GIT_URL LOGS_DIR JOBS TARGETS BUILD_ID REF [CMAKE_ARG...]
#
# TARGETS is comma separated. The new build lands in ROOT/builds/BUILD_ID only
# when every step succeeded, so a failed build never replaces or damages the
# last good one; the deploy switches `current` afterwards.
set -euo pipefail

root=$1 git_url=$2 logs_dir=$3 jobs=$4 id=$6 ref=$7
IFS=, read -r -a targets <<<"$5"
shift 7
log=$logs_dir/llama.cpp-build-$id.log
src=$root/src work=$root/work/$id partial=$root/builds/.$id.partial

mkdir -p "$(dirname "$log")" "$root/builds" "$root/work"
: >"$log"
step=start
say() { echo "[llama.cpp $id] $*"; }
begin() { step=$1; say "$1 ..."; }
failed() {
    say "FAILED during: $step (full log: $log)"
    tail -n 40 "$log" | sed "s/^/[llama.cpp $id]   /"
    rm -rf "$partial"
}
trap failed ERR

begin "fetch $ref from $git_url"
# A local mirror (NAS, USB disk) usually belongs to another user: git would
# refuse it as "dubious ownership". The operator chose this URL, so trust it,
# in a git config of our own that includes the user's (git before 2.41 takes
# safe.directory only from a global or system file).
case $git_url in
file://* | /*)
    printf '[include]\n\tpath = ~/.gitconfig\n[safe]\n\tdirectory = %s\n' "${git_url#file://}" >"$root/gitconfig"
    export GIT_CONFIG_GLOBAL=$root/gitconfig
    ;;
esac
if [ ! -d "$src/.git" ]; then
    git clone --quiet --no-checkout "$git_url" "$src" >>"$log" 2>&1
fi
if ! git -C "$src" rev-parse --quiet --verify "$ref^{commit}" >/dev/null; then
    git -C "$src" fetch --quiet --tags --force origin >>"$log" 2>&1
    git -C "$src" rev-parse --quiet --verify "$ref^{commit}" >/dev/null ||
        git -C "$src" fetch --quiet origin "$ref" >>"$log" 2>&1
fi
commit=$(git -C "$src" rev-parse --verify "$ref^{commit}")
git -C "$src" -c advice.detachedHead=false checkout --quiet --force --detach "$commit" >>"$log" 2>&1

begin "configure ($commit)"
# ccache keys on paths relative to CCACHE_BASEDIR: builds in other folders still hit.
export CCACHE_DIR=${CCACHE_DIR:-$root/ccache} CCACHE_BASEDIR=$root
cmake -S "$src" -B "$work" "$@" >>"$log" 2>&1

begin "compile ${targets[*]}"
# Progress: one line each time the build passes another 10%.
cmake --build "$work" --target "${targets[@]}" -j "$jobs" 2>&1 | tee -a "$log" |
    awk -v prefix="[llama.cpp $id]   " 'match($0, /^\[ *[0-9]+%\]/) {
        pct = substr($0, RSTART + 1, RLENGTH - 2) + 0
        if (pct >= shown + 10 || pct == 100) { shown = pct - pct % 10; print prefix pct "%"; fflush() }
    }'

begin "install into builds/$id"
rm -rf "$partial"
mkdir -p "$partial/bin"
for target in "${targets[@]}"; do
    install -m 0755 "$work/bin/$target" "$partial/bin/$target"
done
"$partial/bin/llama-server" --version >>"$log" 2>&1
printf '{"ref": "%s", "commit": "%s", "cmake_args": "%s"}\n' "$ref" "$commit" "$*" >"$partial/build.json"
rm -rf "$root/builds/$id"
mv "$partial" "$root/builds/$id"
# The build folder is large; ccache keeps the next build fast without it.
rm -rf "$work"
say "built: $("$root/builds/$id/bin/llama-server" --version 2>&1 | grep -m1 -i version || true)"
