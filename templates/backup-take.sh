#!/bin/sh
# One backup of a KITTY host into its restic repository (tasks/runbook/backup.py runs it on stdin).
# POSIX sh: macOS /bin/sh, dash, busybox. Every part is staged in $STAGE (0700, removed
# on exit whatever happens: it holds the .env in clear), listed in manifest.tsv with its
# size and sha256, then stored by `restic backup`, which writes its snapshot last: a
# backup killed before that leaves no snapshot. Retention runs only after a snapshot.
#
# Environment: STAGE COMPOSE PG_SERVICE REDIS_SERVICE ENV_FILE ENV_OWNER KITTY_ROOT LLAMA_ROOT
#   DEPLOYED (JSON: what group data pins) TAG TIMEOUT KEEP (restic forget's keep flags)
#   SAFETY (1: restore.py's safety backup)
#   S3_SERVICE S3_ENDPOINT (empty: no buckets) S3_ACCESS_KEY_SECRET S3_SECRET_KEY_SECRET
#   (names of the .env's values holding the keys) S3_BWLIMIT (rclone --bwlimit, may be empty)
#   RESTIC_REPOSITORY RESTIC_PASSWORD_FILE RESTIC_CACHE_DIR
# Output: progress, then `row<TAB>what<TAB>result` lines the deploy prints as a table.
set -eu
umask 077
# The script comes on stdin (sh -s), and `docker compose exec/run` read stdin: braces make
# the shell read all of it before running any of it.
{
: "${S3_SERVICE:=}" "${S3_ENDPOINT:=}" "${S3_BWLIMIT:=}"

row() { printf 'row\t%s\t%s\n' "$1" "$2"; }
fail() { echo "backup: $*" >&2; exit 1; }
# The name snapshots are kept under (restic --host): the inventory name (tasks/runbook/restic.py
# backup_host), else the Mac's LocalHostName; never a hostname that moves with the network.
BACKUP_HOST=${BACKUP_HOST:-$(scutil --get LocalHostName 2>/dev/null || hostname)}
sha256() { if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d ' ' -f 1; else shasum -a 256 "$1" | cut -d ' ' -f 1; fi; }

# One backup at a time: its PID beside the staging folder (a test kills it by this PID).
if [ -f "$STAGE.pid" ] && kill -0 "$(cat "$STAGE.pid")" 2>/dev/null; then
    fail "another backup is running (pid $(cat "$STAGE.pid"))"
fi
echo "$$" >"$STAGE.pid"
# A backup killed before (SIGKILL runs no trap) left its staging behind: never reused.
rm -rf "$STAGE" "$STAGE.s3"
mkdir -p "$STAGE"
trap 'rm -rf "$STAGE" "$STAGE.s3" "$STAGE.manifest" "$STAGE.pid"' EXIT
trap 'exit 1' HUP INT TERM

# shellcheck disable=SC2086 # COMPOSE is a command line of quoted-free words (tasks/app/compose.py)
compose() { $COMPOSE "$@"; }

# A safety backup (restore.py) saves what there is: a datastore that does not run (its volume
# lost) has nothing to save. A plain backup fails instead.
running() {
    [ -n "$(compose ps --status running -q "$1" 2>/dev/null)" ] && return 0
    [ "${SAFETY:-}" = 1 ] || fail "service $1 is not running"
    row "$1" "not running: nothing to save (safety backup)"
    return 1
}

# shellcheck disable=SC2016 # expanded inside the container
if [ -n "$PG_SERVICE" ] && running "$PG_SERVICE"; then
    echo "postgres: pg_dump -Fc from the running container"
    # The container's own user and database: nothing secret on a command line.
    compose exec -T "$PG_SERVICE" sh -c 'pg_dump -Fc -U "$POSTGRES_USER" -d "$POSTGRES_DB"' >"$STAGE/postgres.dump" ||
        fail "pg_dump in service $PG_SERVICE failed"
    compose exec -T "$PG_SERVICE" sh -c 'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -tAc "SHOW server_version"' \
        >"$STAGE/postgres.version" || fail "could not read the Postgres server version"
    row postgres "pg_dump $(wc -c <"$STAGE/postgres.dump" | tr -d ' ') bytes (server $(tr -d '\r\n' <"$STAGE/postgres.version"))"
fi

if [ -n "$REDIS_SERVICE" ] && running "$REDIS_SERVICE"; then
    cli() { compose exec -T "$REDIS_SERVICE" redis-cli "$@" | tr -d '\r'; }
    save=$(cli CONFIG GET save | sed -n 2p)
    aof=$(cli CONFIG GET appendonly | sed -n 2p)
    dir=$(cli CONFIG GET dir | sed -n 2p)
    file=$(cli CONFIG GET dbfilename | sed -n 2p)
    before=$(cli LASTSAVE)
    # LASTSAVE counts seconds: a save in this same second would not show as a new one.
    while [ "$(cli TIME | sed -n 1p)" = "$before" ]; do sleep 1; done
    echo "redis: BGSAVE, waiting for LASTSAVE to move past $before"
    cli BGSAVE >/dev/null
    waited=0
    until [ "$(cli LASTSAVE)" != "$before" ] && cli INFO persistence | grep -q '^rdb_bgsave_in_progress:0'; do
        [ "$waited" -lt "$TIMEOUT" ] || fail "redis BGSAVE did not finish in ${TIMEOUT}s"
        waited=$((waited + 1))
        sleep 1
    done
    cli INFO persistence | grep -q '^rdb_last_bgsave_status:ok' || fail "redis BGSAVE failed (rdb_last_bgsave_status)"
    compose exec -T "$REDIS_SERVICE" cat "$dir/$file" >"$STAGE/redis.rdb" || fail "could not copy $dir/$file"
    keys=$(cli DBSIZE)
    if [ "$aof" = yes ]; then
        # Redis with AOF on loads its AOF at start and ignores an RDB: restore.py rebuilds the AOF from it.
        row redis "RDB of $keys keys (AOF on: the restore rebuilds the AOF from this RDB)"
    elif [ -z "$save" ]; then
        row redis "RDB of $keys keys; WARNING: persistence is off (save \"\", appendonly no): a restart loses Redis's data"
    else
        row redis "RDB of $keys keys (save $save)"
    fi
fi

if [ -n "$S3_ENDPOINT" ] && running "$S3_SERVICE"; then
    # The S3 store's keys into rclone's environment only (templates/backup-s3-client.sh).
    s3_client
    # Progress of long copies: one line every 5 s.
    set -- --stats 5s --stats-one-line --stats-log-level NOTICE
    [ -z "$S3_BWLIMIT" ] || set -- "$@" --bwlimit "$S3_BWLIMIT"
    buckets=$(rclone lsf --dirs-only kittys3:) || fail "could not list the buckets at $S3_ENDPOINT"
    [ -n "$buckets" ] || row s3 "no buckets at $S3_ENDPOINT"
    for bucket in $buckets; do
        bucket=${bucket%/}
        # S3 bucket names: lowercase letters, digits, dots and hyphens (a part's name, a path).
        case $bucket in "" | *[!a-z0-9.-]* | .*) fail "bucket $bucket: not an S3 bucket name" ;; esac
        echo "s3: copying bucket $bucket"
        rclone copy "kittys3:$bucket" "$STAGE.s3/$bucket" "$@" 2>&1 || fail "rclone could not copy bucket $bucket"
        mkdir -p "$STAGE.s3/$bucket"
        objects=$(find "$STAGE.s3/$bucket" -type f | wc -l | tr -d ' ')
        # One part per bucket: object names of any kind, one size and sha256 in the manifest.
        tar -cf "$STAGE/s3-$bucket.tar" -C "$STAGE.s3/$bucket" .
        rm -rf "${STAGE:?}.s3/$bucket"
        row "s3 $bucket" "$objects objects, $(wc -c <"$STAGE/s3-$bucket.tar" | tr -d ' ') bytes"
    done
fi

env_not_a_link
if [ -f "$ENV_FILE" ]; then
    # Read by its owner (as_env_owner), never by root: a link swapped in after the check above
    # reaches only what that account can read, never a root-only file into the backup.
    as_env_owner cat -- "$ENV_FILE" >"$STAGE/app.env" || fail "could not read $ENV_FILE as $ENV_OWNER"
    chmod 600 "$STAGE/app.env"
    row ".env" "copied (contents not shown)"
fi

# What this data belongs to: the app's checkout, the llama.cpp build, the pins of group data.
app_commit=$(git -C "$KITTY_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
build=$(basename "$(readlink "$LLAMA_ROOT/current" 2>/dev/null || echo none)")
{
    printf '{"app_commit": "%s", "llamacpp_build": "%s", "taken": "%s", "deployed": %s}\n' \
        "$app_commit" "$build" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$DEPLOYED"
} >"$STAGE/deployed.json"
row "deployed record" "app $app_commit, llama.cpp $build"

# The manifest: every part, its size and sha256; restore checks each before it touches the host.
(
    cd "$STAGE"
    for part in *; do
        printf '%s\t%s\t%s\n' "$part" "$(wc -c <"$part" | tr -d ' ')" "$(sha256 "$part")"
    done
) >"$STAGE.manifest"
mv "$STAGE.manifest" "$STAGE/manifest.tsv"
row manifest "$(wc -l <"$STAGE/manifest.tsv" | tr -d ' ') parts"

if ! restic cat config >/dev/null 2>&1; then
    echo "restic: initialising the repository"
    restic init >/dev/null || fail "restic init failed"
    row repository "created"
fi
echo "restic: backup (encrypted)"
cd "$STAGE"
# Snapshots name this host: retention below then touches only this host's, in a shared repository.
restic backup --tag "$TAG" --host "$BACKUP_HOST" . || fail "restic backup failed: no snapshot was written"
snapshot=$(restic snapshots --tag "$TAG" --latest 1 --json | tr ',' '\n' | sed -n 's/.*"short_id":"\([0-9a-f]*\)".*/\1/p' | tail -n 1)
row snapshot "${snapshot:-?}"
cd /
# shellcheck disable=SC2086 # KEEP is a list of flags
restic forget --tag kitty-ops --host "$BACKUP_HOST" --prune $KEEP >/dev/null || fail "restic forget --prune failed (the snapshot is kept)"
row retention "restic forget --prune $KEEP"
}
