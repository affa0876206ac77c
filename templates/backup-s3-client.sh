#!/bin/sh
# Put ahead of backup-take.sh and backup-restore.sh when they are sent to the host
# (tasks/runbook/restic.py: script()): what both use to reach the app's .env and the S3 store. POSIX sh.

# "$@" run as ENV_OWNER, the account the app's checkout and .env belong to. The scripts run
# as root, and that account controls the .env's folder: it can swap any name there for a
# link at any moment. Whatever touches the .env (reads it, writes it) runs as its owner, so
# a link planted there reaches only files that account could read or write anyway; root
# never opens, chmods or chowns a path in that folder.
as_env_owner() {
    if [ "$(id -un)" = "$ENV_OWNER" ]; then
        "$@"
    else
        sudo -n -u "$ENV_OWNER" -- "$@"
    fi
}

# The .env must be a file: a link there was planted (the deploy writes a file, tasks/app/secrets.py).
env_not_a_link() {
    if [ -L "$ENV_FILE" ]; then
        fail "$ENV_FILE is a symbolic link, not the file the deploy writes: refused (remove it and converge)"
    fi
}

# The S3 store's keys, from the app's .env (0600), into rclone's environment only: never a
# command line, never output. RCLONE_CONFIG=/dev/null: no rclone.conf read or written.
# Remote `kittys3:` afterwards. Calls the script's own `fail`.
s3_client() {
    [ -f "$ENV_FILE" ] || fail "no $ENV_FILE to read the S3 keys ($S3_ACCESS_KEY_SECRET, $S3_SECRET_KEY_SECRET) from"
    env_not_a_link
    dotenv() { as_env_owner sed -n "s/^$1='\(.*\)'\$/\1/p" "$ENV_FILE" | tail -n 1; }
    RCLONE_CONFIG_KITTYS3_ACCESS_KEY_ID=$(dotenv "$S3_ACCESS_KEY_SECRET")
    RCLONE_CONFIG_KITTYS3_SECRET_ACCESS_KEY=$(dotenv "$S3_SECRET_KEY_SECRET")
    [ -n "$RCLONE_CONFIG_KITTYS3_ACCESS_KEY_ID" ] || fail "$S3_ACCESS_KEY_SECRET is not in $ENV_FILE"
    [ -n "$RCLONE_CONFIG_KITTYS3_SECRET_ACCESS_KEY" ] || fail "$S3_SECRET_KEY_SECRET is not in $ENV_FILE"
    export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_KITTYS3_TYPE=s3 RCLONE_CONFIG_KITTYS3_PROVIDER=Minio \
        RCLONE_CONFIG_KITTYS3_ENDPOINT="$S3_ENDPOINT" RCLONE_CONFIG_KITTYS3_ACCESS_KEY_ID \
        RCLONE_CONFIG_KITTYS3_SECRET_ACCESS_KEY
}
