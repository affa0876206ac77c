"""The old start scripts' PID files: a name read from the host is data, never shell (issue 18).

The fact's own shell filter is executed for real in tests/unit/test_hardening_host_commands.py;
here the plan is made from a fact answer an attacker could forge with a newline in a
file name, and from one a fact without that filter would give.
"""

from tests.plan import hosts, launchd_facts
from tests.plan.harness import plan

LOGS = hosts.DEFAULTS["kitty_paths"]["logs_dir"]
FACT = "llamacpp-*.pid"


def with_pid_files(*lines: str) -> dict:
    files = [line.split("|")[0] for line in lines]
    present = {key: value for path in files for key, value in launchd_facts.file(path, "4242").items()}
    return {FACT: list(lines), **present, **hosts.macos_converged()}


def test_a_legacy_server_is_stopped_and_its_pid_file_removed():
    result = plan(with_pid_files(f"{LOGS}/llamacpp-q4.pid|4242|/usr/local/bin/llama-server --port 8083"))
    stop = result.op("Stop llama-server PID 4242 left by the old start scripts").commands
    assert stop[0].startswith("kill -TERM 4242;")
    assert result.op(f"Remove stale PID file {LOGS}/llamacpp-q4.pid").commands == [f"rm -f {LOGS}/llamacpp-q4.pid"]


def test_a_crafted_name_plans_nothing_at_all():
    result = plan(
        with_pid_files(
            # The reproduction: `rm -f` of this name ran `touch /tmp/pwned` as root.
            f"{LOGS}/llamacpp-x;touch /tmp/pwned;.pid|1|llama-server",
            # What a newline in a file name forges: a second line naming a file elsewhere, and PID 1.
            "llamacpp-z.pid|1|llama-server.pid|",
            "/etc/llamacpp-passwd.pid|1|llama-server",
        )
    )
    assert not any("pwned" in command or "kill" in command or "rm -f" in command for command in result.commands)
    assert result.ops == []
