#!/bin/sh
# The fact shell: runs the read-only commands of pyinfra's facts one after another,
# all of a converge's over one SSH session (tasks/engine/fact_shell.py), instead of opening
# a session for each. Sent by kitty-ops on the session's command line, never
# installed; nothing secret is on that command line. POSIX sh: macOS runs it with
# /bin/sh (bash 3.2); tested under dash, busybox sh and bash.
#
#   sh -c "$(cat fact-shell.sh)" kitty-fact-shell
#
# Asked (stdin):  a line holding a fresh NONCE (a new one for every question), the
#                 command's lines, then a line holding only that NONCE.
# Answers (stdout): "NONCE STATUS OUT ERR\n", then exactly OUT bytes of the command's
#                 stdout and ERR bytes of its stderr.
#
# Answers are counted, not marked: nothing a command prints (a file name planted in a
# folder a fact lists, a container's log line) can end an answer early or begin the
# next one. The nonce ends a question (a command never holds it: the controller draws
# it after the command is built, and checks) and lets the controller check that the
# answer is to this question.
#
# Each command runs as sshd runs one: `$SHELL -c COMMAND` (the account's login shell),
# in this session's environment, its stdin /dev/null (a command that reads stdin must
# not eat the next question). Its stdout and stderr go to two files in a private folder
# (mktemp -d: 0700), new ones for every question: a process a command left behind
# writes into a file nobody reads again, never into a later answer or into the session.
# Ends at end of input (the controller closed the session).
# The driver's own complaints would go to the session's stderr, which nobody reads:
# unread, they could fill the channel and stall it.
exec 2>/dev/null
umask 077
login_shell=${SHELL:-/bin/sh}
dir=$(mktemp -d "${TMPDIR:-/tmp}/kitty-fact-shell.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
trap 'exit 1' HUP INT TERM PIPE
n=0
while IFS= read -r nonce; do
    [ -n "$nonce" ] || exit 1
    command=
    complete=
    while IFS= read -r line; do
        if [ "$line" = "$nonce" ]; then
            complete=1
            break
        fi
        command="$command$line
"
    done
    [ -n "$complete" ] || exit 0
    n=$((n + 1))
    out=$dir/$n.out err=$dir/$n.err
    # In a subshell that becomes the login shell: the streams are redirected there, not here,
    # so what this shell says of a command killed by a signal ("Killed") is not in its answer.
    (exec "$login_shell" -c "$command") >"$out" 2>"$err" </dev/null
    rc=$?
    # Counted, then sent (BSD's wc pads the count: arithmetic drops it); an empty file needs
    # neither, and most facts print nothing on stderr.
    out_bytes=0 err_bytes=0
    if [ -s "$out" ]; then out_bytes=$(($(wc -c <"$out"))); fi
    if [ -s "$err" ]; then err_bytes=$(($(wc -c <"$err"))); fi
    printf '%s %s %s %s\n' "$nonce" "$rc" "$out_bytes" "$err_bytes"
    [ "$out_bytes$err_bytes" = 00 ] || cat "$out" "$err"
    # Never written again by this shell (a process a command left behind writes into its own
    # old file, never into a later answer): the files of earlier questions go now and then.
    case $n in *00) rm -f "$dir"/*.out "$dir"/*.err ;; esac
done
exit 0
