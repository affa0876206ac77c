#!/bin/sh
# Put verified parts ($WORK/parts, from backup-verify.sh) back on a KITTY host, in the order
# that keeps them (tasks/runbook/restore.py runs it on stdin, after a safety backup). POSIX sh.
#   writers stopped (every stack service but the datastores) -> Postgres into a clean database
#   -> Redis: container stopped, its RDB replaced in the volume, started (copying the file into
#   a running Redis loses it: Redis saves its memory over it when it stops); with AOF on, the
#   AOF rebuilt from that RDB first (Redis loads its AOF at start and ignores the RDB)
#   -> every bucket of the S3 store synced back through its S3 API and compared (rclone check)
#   -> .env (0600, written by its owner) -> the whole stack started, waited for healthy.
# Environment: WORK COMPOSE PG_SERVICE REDIS_SERVICE WRITERS ENV_FILE ENV_OWNER TIMEOUT
#   S3_SERVICE S3_ENDPOINT S3_ACCESS_KEY_SECRET S3_SECRET_KEY_SECRET S3_BWLIMIT (backup-take.sh)
# Output: progress, then `row<TAB>what<TAB>result` lines.
set -eu
umask 077
# The script comes on stdin (sh -s), and `docker compose exec/run` read stdin: braces make
# the shell read all of it before running any of it.
{
: "${S3_SERVICE:=}" "${S3_ENDPOINT:=}" "${S3_BWLIMIT:=}"
parts="$WORK/parts"
row() { printf 'row\t%s\t%s\n' "$1" "$2"; }
fail() { echo "restore: $*" >&2; exit 1; }
trap 'rm -rf "$WORK"' EXIT
trap 'exit 1' HUP INT TERM

# shellcheck disable=SC2086 # COMPOSE is a command line of quote-free words (tasks/app/compose.py)
compose() { $COMPOSE "$@"; }

# A .env that is a link is refused before anything on the host changes.
if [ -f "$parts/app.env" ]; then env_not_a_link; fi

# The datastores up first: after a lost volume they start empty, ready to be filled.
# shellcheck disable=SC2086 # a list of service names
compose up -d --wait --wait-timeout "$TIMEOUT" $PG_SERVICE $REDIS_SERVICE $S3_SERVICE 2>&1 || fail "the datastores did not start"
if [ -n "$WRITERS" ]; then
    echo "stopping the services that write: $WRITERS"
    # shellcheck disable=SC2086 # a list of service names
    compose stop $WRITERS
fi

if [ -n "$PG_SERVICE" ] && [ -f "$parts/postgres.dump" ]; then
    echo "postgres: a clean database, then pg_restore"
    # shellcheck disable=SC2016 # expanded inside the container
    compose exec -T "$PG_SERVICE" sh -c '
        psql -v ON_ERROR_STOP=1 -q -U "$POSTGRES_USER" -d postgres \
            -c "DROP DATABASE IF EXISTS \"$POSTGRES_DB\" WITH (FORCE)" \
            -c "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\""' || fail "could not recreate the database"
    # shellcheck disable=SC2016
    compose exec -T "$PG_SERVICE" sh -c 'pg_restore --exit-on-error -U "$POSTGRES_USER" -d "$POSTGRES_DB"' \
        <"$parts/postgres.dump" || fail "pg_restore failed"
    # shellcheck disable=SC2016
    tables=$(compose exec -T "$PG_SERVICE" sh -c 'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -tAc \
        "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('"'pg_catalog'"', '"'information_schema'"')"' | tr -d '\r')
    row postgres "restored into a clean database ($tables tables)"
fi

if [ -n "$REDIS_SERVICE" ] && [ -f "$parts/redis.rdb" ]; then
    echo "redis: stop, replace the RDB in its volume, start"
    setting() { compose exec -T "$REDIS_SERVICE" redis-cli CONFIG GET "$1" | tr -d '\r' | sed -n 2p; }
    dir=$(setting dir)
    file=$(setting dbfilename)
    aof=$(setting appendonly)
    aofdir=$(setting appenddirname)
    aoffile=$(setting appendfilename)
    if [ -z "$dir" ] || [ -z "$file" ]; then fail "could not read the dir and dbfilename of Redis"; fi
    container=$(compose ps -q "$REDIS_SERVICE")
    compose stop "$REDIS_SERVICE"
    # Readable by the redis user; it writes the next save beside it and renames it over.
    chmod 644 "$parts/redis.rdb"
    docker cp "$parts/redis.rdb" "$container:$dir/$file" || fail "could not copy the RDB into $container"
    how="RDB replaced while stopped"
    if [ "$aof" = yes ]; then
        # A Redis with AOF on loads its AOF and ignores the RDB (with no AOF it starts empty).
        # So, in a one-off container of the same service and volume: the old AOF removed, a
        # Redis on a private socket started with AOF off (it loads the RDB), `CONFIG SET
        # appendonly yes` (it writes a new AOF from memory), waited for, shut down. Redis 7
        # keeps its AOF in appenddirname, Redis 6 in appendfilename: both are passed.
        echo "redis: AOF on: rebuilding the AOF from the restored RDB"
        # stdin is this script (sh -s): the one-off container must not read it.
        # shellcheck disable=SC2016 # expanded inside the container
        compose run --rm --no-deps -T --entrypoint sh "$REDIS_SERVICE" -c '
            set -eu
            dir=$1 file=$2 aofdir=$3 aoffile=$4 timeout=$5
            sock=/tmp/kitty-restore.sock
            set -- --port 0 --unixsocket "$sock" --dir "$dir" --dbfilename "$file" --appendonly no --save ""
            # Never an empty name: "rm -rf $dir/" would take the restored RDB with it.
            if [ -n "$aofdir" ]; then rm -rf "${dir:?}/$aofdir"; set -- "$@" --appenddirname "$aofdir"; fi
            if [ -n "$aoffile" ]; then rm -f "${dir:?}/$aoffile"; set -- "$@" --appendfilename "$aoffile"; fi
            redis-server "$@" &
            cli() { redis-cli -s "$sock" "$@"; }
            waited=0
            until cli PING 2>/dev/null | grep -q PONG; do
                [ "$waited" -lt "$timeout" ] || exit 1
                waited=$((waited + 1)); sleep 1
            done
            cli CONFIG SET appendonly yes >/dev/null
            until cli INFO persistence | grep -q "^aof_enabled:1" &&
                cli INFO persistence | grep -q "^aof_rewrite_in_progress:0" &&
                cli INFO persistence | grep -q "^aof_rewrite_scheduled:0"; do
                [ "$waited" -lt "$timeout" ] || exit 1
                waited=$((waited + 1)); sleep 1
            done
            cli INFO persistence | grep -q "^aof_last_bgrewrite_status:ok"
            echo "redis: AOF rebuilt from $(cli DBSIZE | tr -d "\r") keys"
            cli SHUTDOWN NOSAVE >/dev/null 2>&1 || true
            wait' sh "$dir" "$file" "$aofdir" "$aoffile" "$TIMEOUT" </dev/null ||
            fail "could not rebuild the AOF of Redis from the restored RDB"
        how="RDB replaced while stopped, AOF rebuilt from it (appendonly yes)"
    fi
    compose start "$REDIS_SERVICE"
    waited=0
    until compose exec -T "$REDIS_SERVICE" redis-cli PING 2>/dev/null | grep -q PONG; do
        [ "$waited" -lt "$TIMEOUT" ] || fail "redis did not answer in ${TIMEOUT}s after the restore"
        waited=$((waited + 1))
        sleep 1
    done
    row redis "$how ($(compose exec -T "$REDIS_SERVICE" redis-cli DBSIZE | tr -d '\r') keys)"
fi

if [ -n "$S3_ENDPOINT" ] && ls "$parts"/s3-*.tar >/dev/null 2>&1; then
    # The S3 store's keys from the .env its container was started with (0600), into rclone's
    # environment only (templates/backup-s3-client.sh).
    s3_client
    set -- --stats 5s --stats-one-line --stats-log-level NOTICE
    [ -z "$S3_BWLIMIT" ] || set -- "$@" --bwlimit "$S3_BWLIMIT"
    for tarball in "$parts"/s3-*.tar; do
        bucket=${tarball##*/s3-}
        bucket=${bucket%.tar}
        case $bucket in "" | *[!a-z0-9.-]* | .*) fail "part $tarball: not an S3 bucket name" ;; esac
        echo "s3: bucket $bucket: sync from the backup, then compare"
        rm -rf "$WORK/s3"
        mkdir -p "$WORK/s3/$bucket"
        tar -xf "$tarball" -C "$WORK/s3/$bucket" || fail "could not unpack $tarball"
        # Made only when missing: an S3 store answers 409 to a bucket that exists.
        if ! rclone lsf --dirs-only kittys3: | grep -qx "$bucket/"; then
            rclone mkdir "kittys3:$bucket" 2>&1 || fail "could not create bucket $bucket"
        fi
        # sync: the bucket as it was backed up (objects made since are removed; the safety
        # backup holds them). Buckets the backup does not know are left alone.
        rclone sync "$WORK/s3/$bucket" "kittys3:$bucket" "$@" 2>&1 || fail "rclone could not restore bucket $bucket"
        rclone check "$WORK/s3/$bucket" "kittys3:$bucket" 2>&1 || fail "bucket $bucket differs from the backup after the restore"
        objects=$(find "$WORK/s3/$bucket" -type f | wc -l | tr -d ' ')
        row "s3 $bucket" "restored: $objects objects, each compared (size and MD5)"
        rm -rf "$WORK/s3"
    done
fi

if [ -f "$parts/app.env" ]; then
    env_not_a_link
    # Written by its owner (as_env_owner), as the deploy writes it (tasks/engine/operations.py,
    # secret_file): into a new 0600 file beside it, renamed over it. Root never chmods or
    # chowns a name in that folder (its owner could swap it for a link to /etc/passwd between
    # two steps); rename replaces a link rather than following it.
    # shellcheck disable=SC2016 # expanded by the owner's shell
    as_env_owner sh -c '
        set -eu
        umask 077
        dest=$1
        tmp=$(mktemp "${dest%/*}/.env.restore.XXXXXX")
        trap '"'"'rm -f "$tmp"'"'"' EXIT
        cat >"$tmp"
        chmod 600 "$tmp"
        if [ -L "$dest" ]; then echo "$dest is a symbolic link: refused" >&2; exit 1; fi
        mv -f "$tmp" "$dest"' sh "$ENV_FILE" <"$parts/app.env" || fail "could not write $ENV_FILE as $ENV_OWNER"
    row ".env" "restored (0600, written as $ENV_OWNER, contents not shown)"
fi

echo "starting the stack and waiting for its health"
compose up -d --wait --wait-timeout "$TIMEOUT" 2>&1 || fail "the stack is not healthy after the restore"
row stack "every service started and healthy"
if [ -f "$parts/deployed.json" ]; then
    row "belongs to" "$(tr -d '\n{}"' <"$parts/deployed.json" | cut -c 1-200)"
fi
}
