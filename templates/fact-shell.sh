#!/bin/sh
# The fact shell: runs the read-only commands of pyinfra's facts one after another,
# all of a converge's over one SSH session (tasks/fact_shell.py), instead of opening
# a session for each. Sent by kitty-ops on the session's command line, never
# installed. POSIX sh: macOS runs it with /bin/sh (bash 3.2); tested under dash,
# busybox sh and bash.
#
#   sh -c "$(cat fact-shell.sh)" kitty-fact-shell TOKEN
#
# Asked (stdin):  a command's lines, then a line holding only TOKEN.
# Answers (stdout): the command's stdout, "\nTOKEN STATUS\n", its stderr, "\nTOKEN\n".
#
# Each command runs as sshd runs one: `$SHELL -c COMMAND` (the account's login
# shell), in this session's environment, its stdin /dev/null (a command that reads
# stdin must not eat the next question). Its stderr is held until it has ended and
# sent after its stdout: one stream, so a chatty stderr can never block stdout.
# Ends at end of input (the controller closed the session).
token=${1:?usage: fact-shell.sh TOKEN}
login_shell=${SHELL:-/bin/sh}
# The driver's own complaints (a NUL byte dropped from a command's stderr) would go to the
# session's stderr, which nobody reads: unread, they could fill the channel and stall it.
exec 2>/dev/null
while :; do
    command=
    complete=
    while IFS= read -r line; do
        if [ "$line" = "$token" ]; then
            complete=1
            break
        fi
        command="$command$line
"
    done
    [ -n "$complete" ] || exit 0
    { errors=$("$login_shell" -c "$command" 2>&1 >&3 3>&- </dev/null); rc=$?; } 3>&1
    printf '\n%s %s\n%s\n%s\n' "$token" "$rc" "$errors" "$token"
done
