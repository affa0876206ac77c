"""LaunchdJob: what `launchctl print <domain>/<label>` says, as data.

The outputs below follow macOS 13-15 (`launchctl print system/<label>`),
trimmed, with the nested blocks that carry their own `state` and `pid`.
"""

from tasks.supervise.launchd import EXIT_MARKER, LaunchdJob

TARGET = "system/com.kitty.llama-server.q4"

RUNNING = """\
system/com.kitty.llama-server.q4 = {
	active count = 1
	path = /Library/LaunchDaemons/com.kitty.llama-server.q4.plist
	type = LaunchDaemon
	state = running

	program = /opt/kitty/current/bin/llama-server
	arguments = {
		/opt/kitty/current/bin/llama-server
		--host
		127.0.0.1
		--port
		8083
		--alias
		kitty q4
	}

	working directory = /opt/kitty

	stdout path = /Users/Shared/Coding/KITT/.logs/llamacpp-q4.log
	stderr path = /Users/Shared/Coding/KITT/.logs/llamacpp-q4.log
	default environment = {
		PATH => /usr/bin:/bin:/usr/sbin:/sbin
	}

	environment = {
		XPC_SERVICE_NAME => com.kitty.llama-server.q4
	}

	domain = system
	username = admin
	minimum runtime = 10
	exit timeout = 5
	runs = 1
	pid = 4242
	immediate reason = speculative
	forks = 0
	execs = 1
	last exit code = (never exited)

	endpoints = {
		"com.kitty.endpoint" = {
			port = 0xf9e3b
			active = 1
			pid = 99999
			state = bogus
		}
	}

	event triggers = {
		com.kitty.llama-server.q4 => {
			state = active
		}
	}

	spawn type = interactive (4)
	jetsam priority = 40
	probabilistic guard malloc policy = {
		activation rate = 1/1000
		sample rate = 1/0
	}

	properties = keepalive | runatload | inferred program
}""".splitlines()

CRASHED = """\
system/com.kitty.llama-server.q4 = {
	active count = 0
	path = /Library/LaunchDaemons/com.kitty.llama-server.q4.plist
	type = LaunchDaemon
	state = spawn scheduled

	program = /opt/kitty/current/bin/llama-server
	domain = system
	runs = 12
	last exit code = 1
	last terminating signal = Killed: 9
}""".splitlines()


def fact(lines, exit_code=0, overrides=()):
    return LaunchdJob().process([*lines, f"{EXIT_MARKER}{exit_code}", *overrides])


def test_a_running_job():
    status = fact(RUNNING)
    assert status["loaded"] is True
    assert status["state"] == "running"
    # Not the endpoint's pid 99999 nor its "bogus" state further down.
    assert status["pid"] == 4242
    # "(never exited)" is not exit code 0.
    assert status["last_exit_code"] is None
    assert status["program"] == "/opt/kitty/current/bin/llama-server"
    assert status["path"] == "/Library/LaunchDaemons/com.kitty.llama-server.q4.plist"
    assert status["arguments"][:3] == ["/opt/kitty/current/bin/llama-server", "--host", "127.0.0.1"]
    assert status["arguments"][-1] == "kitty q4"
    assert status["disabled"] is False
    assert status["error"] is None


def test_a_loaded_job_that_is_not_running_reports_its_last_exit():
    status = fact(CRASHED)
    assert status["loaded"] is True
    assert status["state"] == "spawn scheduled"
    assert status["pid"] is None
    assert status["last_exit_code"] == 1
    assert status["last_signal"] == "Killed: 9"


def test_an_exit_code_with_its_name():
    status = fact([*CRASHED[:-2], "\tlast exit code = 78: EX_CONFIG", "}"])
    assert status["last_exit_code"] == 78


def test_not_loaded_is_exit_113():
    status = fact(['Could not find service "com.kitty.llama-server.q4" in domain for system'], exit_code=113)
    assert status["loaded"] is False
    assert status["error"] is None
    assert status["pid"] is None and status["state"] is None


def test_not_loaded_is_recognised_by_its_message_too():
    status = fact(["Bad request.", 'Could not find service "com.kitty.llama-server.q4" in domain for port'], 1)
    assert status["loaded"] is False and status["error"] is None


def test_any_other_failure_is_an_error_not_a_guess():
    status = fact(["Unrecognized target specifier."], exit_code=64)
    assert status["loaded"] is False
    assert status["error"] == "exit 64: Unrecognized target specifier."


def test_output_without_the_exit_marker_is_an_error():
    assert LaunchdJob().process(["sh: launchctl: command not found"])["error"]


def test_a_disabled_override_is_seen_in_both_spellings():
    assert fact(RUNNING, overrides=['\t"com.kitty.llama-server.q4" => disabled'])["disabled"] is True
    # macOS before 10.15 wrote true for "disabled".
    assert fact(RUNNING, overrides=['\t"com.kitty.llama-server.q4" => true'])["disabled"] is True
    assert fact(RUNNING, overrides=['\t"com.kitty.llama-server.q4" => enabled'])["disabled"] is False
    not_loaded = fact(["Could not find service"], 113, overrides=['\t"com.kitty.llama-server.q4" => disabled'])
    assert not_loaded["loaded"] is False and not_loaded["disabled"] is True


def test_the_command_never_fails_and_asks_for_the_exact_job():
    command = LaunchdJob().command(TARGET)
    assert command.startswith(f"launchctl print {TARGET} 2>&1; echo {EXIT_MARKER}$?;")
    assert "launchctl print-disabled system" in command
    assert command.endswith("|| true")
    assert "grep -F '\"com.kitty.llama-server.q4\" =>'" in command


def test_an_agent_target_asks_its_gui_domain():
    command = LaunchdJob().command("gui/501/com.kitty.llama-server.q4")
    assert "launchctl print gui/501/com.kitty.llama-server.q4 2>&1" in command
    assert "launchctl print-disabled gui/501 " in command
