#!/bin/sh
# Put verified parts ($WORK/parts, from backup-verify.sh) back on a KITTY host, in the order
# that keeps them (tasks/restore.py runs it on stdin, after a safety backup). POSIX sh.
#   writers stopped (every stack service but the datastores) -> Postgres into a clean database
#   -> Redis: container stopped, its RDB replaced in the volume, started (copying the file into
#   a running Redis loses it: Redis saves its memory over it when it stops) -> .env (0600)
#   -> the whole stack started, waited for healthy.
# Environment: WORK COMPOSE PG_SERVICE REDIS_SERVICE WRITERS ENV_FILE ENV_OWNER TIMEOUT
# Output: progress, then `row<TAB>what<TAB>result` lines.
set -eu
umask 077
parts="$WORK/parts"
row() { printf 'row\t%s\t%s\n' "$1" "$2"; }
fail() { echo "restore: $*" >&2; exit 1; }
trap 'rm -rf "$WORK"' EXIT
trap 'exit 1' HUP INT TERM

# shellcheck disable=SC2086 # COMPOSE is a command line of quote-free words (tasks/compose.py)
compose() { $COMPOSE "$@"; }

# The datastores up first: after a lost volume they start empty, ready to be filled.
# shellcheck disable=SC2086 # a list of service names
compose up -d --wait --wait-timeout "$TIMEOUT" $PG_SERVICE $REDIS_SERVICE 2>&1 || fail "the datastores did not start"
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
    dir=$(compose exec -T "$REDIS_SERVICE" redis-cli CONFIG GET dir | tr -d '\r' | sed -n 2p)
    file=$(compose exec -T "$REDIS_SERVICE" redis-cli CONFIG GET dbfilename | tr -d '\r' | sed -n 2p)
    if [ -z "$dir" ] || [ -z "$file" ]; then fail "could not read the dir and dbfilename of Redis"; fi
    container=$(compose ps -q "$REDIS_SERVICE")
    compose stop "$REDIS_SERVICE"
    # Readable by the redis user; it writes the next save beside it and renames it over.
    chmod 644 "$parts/redis.rdb"
    docker cp "$parts/redis.rdb" "$container:$dir/$file" || fail "could not copy the RDB into $container"
    compose start "$REDIS_SERVICE"
    waited=0
    until compose exec -T "$REDIS_SERVICE" redis-cli PING 2>/dev/null | grep -q PONG; do
        [ "$waited" -lt "$TIMEOUT" ] || fail "redis did not answer in ${TIMEOUT}s after the restore"
        waited=$((waited + 1))
        sleep 1
    done
    row redis "RDB replaced while stopped ($(compose exec -T "$REDIS_SERVICE" redis-cli DBSIZE | tr -d '\r') keys)"
fi

if [ -f "$parts/app.env" ]; then
    dir=$(dirname "$ENV_FILE")
    tmp=$(mktemp "$dir/.env.restore.XXXXXX")
    cat "$parts/app.env" >"$tmp"
    chmod 600 "$tmp"
    chown "$ENV_OWNER" "$tmp"
    mv -f "$tmp" "$ENV_FILE"
    row ".env" "restored (0600, contents not shown)"
fi

echo "starting the stack and waiting for its health"
compose up -d --wait --wait-timeout "$TIMEOUT" 2>&1 || fail "the stack is not healthy after the restore"
row stack "every service started and healthy"
if [ -f "$parts/deployed.json" ]; then
    row "belongs to" "$(tr -d '\n{}"' <"$parts/deployed.json" | cut -c 1-200)"
fi
