#!/usr/bin/env bash
# Wait until each model server answers /health with 200, all at once.
# Installed by kitty-ops (tasks/servers.py); runs ON the host, so servers that
# listen only on the host's loopback are reachable even from a laptop's deploy.
#
#   wait-healthy.sh NAME|URL|TIMEOUT_S|LOG ...
#
# 503 means "still loading the model". On a timeout, each failed server is
# named with the tail of its log.
set -uo pipefail

declare -A url deadline log state
names=()
now=$(date +%s)
for spec in "$@"; do
    IFS='|' read -r name u timeout logfile <<<"$spec"
    names+=("$name") url[$name]=$u deadline[$name]=$((now + timeout)) log[$name]=$logfile state[$name]=waiting
done

pending=${#names[@]}
failed=()
while ((pending > 0)); do
    for name in "${names[@]}"; do
        [ "${state[$name]}" = waiting ] || [ "${state[$name]}" = loading ] || [ "${state[$name]}" = down ] || continue
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${url[$name]}" || true)
        case $code in
        200) new=healthy ;;
        503) new=loading ;;
        *) new=down ;;
        esac
        if [ "$new" != "${state[$name]}" ]; then
            echo "[health] $name: $new (${url[$name]})"
            state[$name]=$new
        fi
        if [ "$new" = healthy ]; then
            pending=$((pending - 1))
        elif (($(date +%s) >= deadline[$name])); then
            echo "[health] $name: FAILED, not healthy in time (last: $new). Last lines of ${log[$name]}:"
            tail -n 30 "${log[$name]}" 2>/dev/null | sed 's/^/[health]   /'
            state[$name]=failed
            failed+=("$name")
            pending=$((pending - 1))
        fi
    done
    ((pending > 0)) && sleep 1
done
if ((${#failed[@]})); then
    echo "[health] not healthy: ${failed[*]}"
    exit 1
fi
