#!/bin/sh
# Put ahead of backup-take.sh and backup-restore.sh when they are sent to the host
# (tasks/restic.py: script()): the one S3 client setup both use. POSIX sh.

# The S3 store's keys, from the app's .env (0600), into rclone's environment only: never a
# command line, never output. RCLONE_CONFIG=/dev/null: no rclone.conf read or written.
# Remote `kittys3:` afterwards. Calls the script's own `fail`.
s3_client() {
    [ -f "$ENV_FILE" ] || fail "no $ENV_FILE to read the S3 keys ($S3_ACCESS_KEY_SECRET, $S3_SECRET_KEY_SECRET) from"
    dotenv() { sed -n "s/^$1='\(.*\)'\$/\1/p" "$ENV_FILE" | tail -n 1; }
    RCLONE_CONFIG_KITTYS3_ACCESS_KEY_ID=$(dotenv "$S3_ACCESS_KEY_SECRET")
    RCLONE_CONFIG_KITTYS3_SECRET_ACCESS_KEY=$(dotenv "$S3_SECRET_KEY_SECRET")
    [ -n "$RCLONE_CONFIG_KITTYS3_ACCESS_KEY_ID" ] || fail "$S3_ACCESS_KEY_SECRET is not in $ENV_FILE"
    [ -n "$RCLONE_CONFIG_KITTYS3_SECRET_ACCESS_KEY" ] || fail "$S3_SECRET_KEY_SECRET is not in $ENV_FILE"
    export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_KITTYS3_TYPE=s3 RCLONE_CONFIG_KITTYS3_PROVIDER=Minio \
        RCLONE_CONFIG_KITTYS3_ENDPOINT="$S3_ENDPOINT" RCLONE_CONFIG_KITTYS3_ACCESS_KEY_ID \
        RCLONE_CONFIG_KITTYS3_SECRET_ACCESS_KEY
}
