#!/bin/sh
# kitty-ops (templates/colima-start.sh): starts colima for launchd after an unclean end.
#
#   colima-start.sh LIMA_INSTANCE_DIR COLIMA [ARG...]
#
# A power cut or a SIGKILL leaves Lima's host agent files in the instance's folder
# (~/.colima/_lima/<instance>/ha.pid and ha.sock); while they exist every `colima start`
# fails (lima-vm/lima#5075), so a KeepAlive job would fail forever and the app stack
# never come back. Removed here when the process ha.pid names is not running (or is not
# Lima's: a PID reused by something else), then colima replaces this shell (exec), so
# launchd supervises colima itself. A running host agent is left alone: that colima
# start fails, as it should, rather than two VMs sharing one disk.
set -u
if [ "$#" -lt 2 ]; then
    echo "usage: colima-start.sh LIMA_INSTANCE_DIR COLIMA [ARG...]" >&2
    exit 64
fi
dir=$1
shift
pidfile=$dir/ha.pid
sock=$dir/ha.sock

# 0 when PID is Lima's running host agent (or cannot be told apart from one).
agent_runs() {
    kill -0 "$1" 2>/dev/null || return 1
    # BSD and procps ps; a ps without -p (busybox) tells nothing: treat it as running.
    # (`limactl hostagent`, or colima itself: both names hold "lima".)
    cmd=$(ps -p "$1" -o command= 2>/dev/null) || return 0
    case $cmd in
    "" | *lima*) return 0 ;;
    *) return 1 ;;
    esac
}

if [ -f "$pidfile" ]; then
    pid=$(head -n 1 "$pidfile" | tr -cd '0-9')
    if [ -z "$pid" ] || ! agent_runs "$pid"; then
        echo "colima-start: removing stale $pidfile and $sock (PID ${pid:-none} is not Lima's running host agent)" >&2
        rm -f "$pidfile" "$sock"
    fi
elif [ -e "$sock" ] || [ -L "$sock" ]; then
    echo "colima-start: removing stale $sock (no ha.pid beside it)" >&2
    rm -f "$sock"
fi
exec "$@"
