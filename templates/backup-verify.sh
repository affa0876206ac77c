#!/bin/sh
# Verify one snapshot of the KITTY restic repository into $WORK, touching nothing else
# (tasks/runbook/restore.py runs it on stdin before anything on the host changes). POSIX sh.
#   1. `restic check`: the repository's structure;
#   2. `restic restore --verify`: every file of the snapshot read back, its blobs' hashes checked;
#   3. manifest.tsv: every part listed is there, with its size and sha256, and nothing else is;
#      a backup without a manifest (killed before it was written) is refused. A part is a
#      regular file named by a plain name: a link (to a host file whose size and sha256 the
#      manifest copies), a folder, a device or a name with "/" or ".." is refused, never
#      followed: root later chmods each part and copies it into a container.
# The snapshot is restored into a fresh folder of its own (0700, made here, never one that
# was there before), inside the backup folder (0700, tasks/runbook/restic.py).
# Environment: SNAPSHOT WORK REQUIRED (parts that must be present) STAGE (backup-take.sh's)
#   RESTIC_REPOSITORY RESTIC_PASSWORD_FILE RESTIC_CACHE_DIR
# Output: `bad<TAB>reason` lines and exit 3 when the snapshot is refused; `row<TAB>...` lines.
set -eu
umask 077

sha256() { if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d ' ' -f 1; else shasum -a 256 "$1" | cut -d ' ' -f 1; fi; }
refuse() { printf 'bad\t%s\n' "$1"; exit 3; }
# The name snapshots are kept under (restic --host): the inventory name (tasks/runbook/restic.py
# backup_host), else the Mac's LocalHostName; never a hostname that moves with the network.
BACKUP_HOST=${BACKUP_HOST:-$(scutil --get LocalHostName 2>/dev/null || hostname)}

# rm -rf removes a link itself, never what it points to; mkdir without -p fails on anything
# that appeared since: the folder is this run's own.
rm -rf "$WORK"
mkdir -m 700 "$WORK" || refuse "could not make a fresh folder $WORK"
# A backup killed halfway (SIGKILL runs no trap) left its staging, the .env in clear among it:
# removed here once its process is gone (it never was a snapshot).
if [ -n "${STAGE:-}" ] && [ -f "$STAGE.pid" ] && ! kill -0 "$(cat "$STAGE.pid")" 2>/dev/null; then
    rm -rf "$STAGE" "$STAGE.s3" "$STAGE.manifest" "$STAGE.pid"
    printf 'row\t%s\t%s\n' "killed backup" "its staging removed (it left no snapshot)"
fi

restic cat config >/dev/null 2>&1 || refuse "no restic repository at $RESTIC_REPOSITORY (or the password does not open it)"
id=$(restic snapshots --tag kitty-ops --json "$SNAPSHOT" 2>/dev/null | tr ',' '\n' | sed -n 's/.*"short_id":"\([0-9a-f]*\)".*/\1/p' | tail -n 1)
if [ "$SNAPSHOT" = latest ]; then
    # The newest backup.py snapshot (tags kitty-ops and backup), never a restore's safety snapshot.
    id=$(restic snapshots --tag kitty-ops,backup --host "$BACKUP_HOST" --latest 1 --json 2>/dev/null | tr ',' '\n' | sed -n 's/.*"short_id":"\([0-9a-f]*\)".*/\1/p' | tail -n 1)
fi
[ -n "$id" ] || refuse "no kitty-ops snapshot $SNAPSHOT in the repository"
echo "restic: check of the repository"
restic check >"$WORK.check.log" 2>&1 || { tail -n 5 "$WORK.check.log" >&2; refuse "restic check failed: the repository is damaged"; }
echo "restic: restore --verify of snapshot $id"
restic restore "$id" --target "$WORK/data" --verify >"$WORK.restore.log" 2>&1 ||
    { tail -n 5 "$WORK.restore.log" >&2; refuse "restic restore --verify of $id failed: its data is damaged"; }
rm -f "$WORK.check.log" "$WORK.restore.log"

manifest=$(find "$WORK/data" -name manifest.tsv -type f)
[ -n "$manifest" ] || refuse "snapshot $id has no manifest.tsv: an incomplete backup"
case $manifest in *"
"*) refuse "snapshot $id has more than one manifest.tsv" ;; esac
parts=$(dirname "$manifest")
# A part as restore uses it: a regular file, itself (-f alone would follow a link).
regular() { [ -f "$1" ] && [ ! -L "$1" ]; }
while IFS="$(printf '\t')" read -r name size sum; do
    case $name in
        "" | . | .. | */* | *..*) refuse "manifest names ${name:-an empty name}: not the name of a part" ;;
    esac
    [ -e "$parts/$name" ] || [ -L "$parts/$name" ] || refuse "$name: listed in the manifest, missing from the snapshot"
    regular "$parts/$name" || refuse "$name: not a regular file (a link, a folder or a device): refused, never followed"
    [ "$(wc -c <"$parts/$name" | tr -d ' ')" = "$size" ] || refuse "$name: size differs from the manifest"
    [ "$(sha256 "$parts/$name")" = "$sum" ] || refuse "$name: sha256 differs from the manifest"
done <"$manifest"
listed() { cut -f 1 "$manifest" | grep -qxF -- "$1"; }
for name in $REQUIRED; do
    listed "$name" || refuse "$name: missing from the manifest"
done
for path in "$parts"/* "$parts"/.[!.]* "$parts"/..?*; do
    [ -e "$path" ] || [ -L "$path" ] || continue
    name=$(basename "$path")
    [ "$name" = manifest.tsv ] || listed "$name" || refuse "$name: in the snapshot, not in the manifest"
    regular "$path" || refuse "$name: not a regular file (a link, a folder or a device): refused, never followed"
done
# The parts, where the restore reads them.
rm -rf "$WORK/parts"
mv "$parts" "$WORK/parts"
rm -rf "$WORK/data"
printf 'row\tsnapshot %s\t%s\n' "$id" "verified: restic check, restore --verify, $(wc -l <"$WORK/parts/manifest.tsv" | tr -d ' ') parts match the manifest"
printf 'id\t%s\n' "$id"
