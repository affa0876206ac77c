"""diagnose: reading supervisor answers, naming stopped and crash-looping servers with remedies, redacting secrets."""

from __future__ import annotations

import tarfile

from tasks import diagnose
from tests.plan.harness import simulated_platform

LINUX = simulated_platform("linux", "admin", "x86_64")
MAC = simulated_platform("macos", "admin", "arm64")
FILES_OK = {"m/a.gguf": {"exists": True, "size": 10, "mtime": 5, "stamp": {"sha256": "x", "size": 10, "mtime": 5}}}
CANARY = "sk-canary-7f3a9c21d0"


def systemd(active, sub, restarts, status, pid):
    return diagnose.supervisor_state(
        LINUX,
        f"LoadState=loaded\nActiveState={active}\nSubState={sub}\nNRestarts={restarts}\n"
        f"ExecMainStatus={status}\nMainPID={pid}\n",
    )


def test_a_stopped_server_and_a_crash_looping_one_are_named_with_their_remedies():
    stopped = diagnose.server_findings("q4", 8083, systemd("inactive", "dead", 0, 0, 0), None, FILES_OK, "")
    looping = diagnose.server_findings(
        "summary", 8085, systemd("activating", "auto-restart", 7, 1, 0), None, FILES_OK, "error: out of memory"
    )
    assert [(f.subject, f.problem, f.remedy) for f in stopped] == [
        ("server q4", "not running (inactive/dead)", diagnose.REMEDY["stopped"])
    ]
    assert looping[0].subject == "server summary" and looping[0].problem.startswith("crash loop: 7 restarts")
    assert looping[0].remedy == diagnose.REMEDY["crash-loop"] and "out of memory" in looping[0].detail


def test_a_healthy_server_has_no_finding_and_a_foreign_port_holder_is_named():
    running = systemd("active", "running", 0, 0, 42)
    assert diagnose.server_findings("q4", 8083, running, {"pid": 42, "command": "llama-server"}, FILES_OK, "") == []
    found = diagnose.server_findings("q4", 8083, running, {"pid": 9, "command": "python3"}, FILES_OK, "")
    assert found[0].problem == "port 8083 held by PID 9 (python3)" and found[0].remedy == diagnose.REMEDY["port"]


def test_missing_and_unstamped_model_files_are_named():
    files = {
        "m/a.gguf": {"exists": False},
        "m/b.gguf": {"exists": True, "size": 10, "mtime": 6, "stamp": {"sha256": "x", "size": 10, "mtime": 5}},
    }
    running = systemd("active", "running", 0, 0, 42)
    found = diagnose.server_findings("q4", 8083, running, {"pid": 42, "command": "llama-server"}, files, "")
    assert [f.problem for f in found] == [
        "model file m/a.gguf is missing",
        "model file m/b.gguf is not verified (no stamp, or it changed since)",
    ]


def test_launchctl_print_gives_runs_and_last_exit():
    printed = "system/com.kitty.llama-server.q4 = {\n\tstate = not running\n\truns = 5\n\tlast exit code = 1\n}"
    state = diagnose.supervisor_state(MAC, printed)
    assert state["restarts"] == 4 and state["last_exit"] == "1" and not state["running"]
    assert diagnose.supervisor_state(MAC, "Could not find service")["state"] == "not loaded"


def test_missing_env_names_are_names_only():
    assert diagnose.missing_env_names(["A_KEY", "B"], ["B", "C"]) == ["A_KEY"]


def test_memory_from_proc_meminfo_flags_swap():
    info, found = diagnose.memory_findings(
        LINUX, "MemTotal: 16777216 kB\nMemAvailable: 8388608 kB\nSwapTotal: 2097152 kB\nSwapFree: 1048576 kB\n"
    )
    assert info == {"total_gib": 16.0, "available_gib": 8.0, "swap_used_gib": 1.0}
    assert [f.subject for f in found] == ["memory"]


def test_the_bundle_holds_no_secret_value(tmp_path):
    finding = diagnose.Finding(
        "server q4", "crash loop", "r", f"Authorization: Bearer {CANARY}\nOPENAI_API_KEY={CANARY}"
    )
    facts = {"log": f"POSTGRES_PASSWORD: hunter2-canary api_key={CANARY} token {CANARY}"}
    path = diagnose.bundle([finding], facts, [CANARY, "hunter2-canary"], tmp_path / "b.tar.gz")
    with tarfile.open(path) as tar:
        text = "".join(tar.extractfile(m).read().decode() for m in tar.getmembers())
    assert CANARY not in text and "hunter2-canary" not in text
    assert "crash loop" in text and diagnose.REDACTED in text


def test_stack_findings_name_a_missing_a_stopped_and_an_unhealthy_container():
    state = {
        "ok": True,
        "containers": {
            "postgres": {"state": "running", "health": "healthy"},
            "redis": {"state": "exited", "health": "none"},
            "brain": {"state": "running", "health": "unhealthy"},
        },
    }
    found = diagnose.stack_findings(state, ["postgres", "redis", "brain", "ui"])
    assert [(f.subject, f.problem) for f in found] == [
        ("stack redis", "container exited (health: none)"),
        ("stack brain", "container running (health: unhealthy)"),
        ("stack ui", "no container"),
    ]
    down = diagnose.stack_findings({"ok": False, "error": "Cannot connect to the Docker daemon"}, ["redis"])
    assert down[0].problem == "compose does not answer: Cannot connect to the Docker daemon"


def test_a_secret_that_json_would_escape_is_still_redacted(tmp_path):
    secret = 'pa"ss\\word-canary'
    facts = {"log": f"connecting with {secret}", secret: "a key that is a secret"}
    path = diagnose.bundle([], facts, [secret], tmp_path / "b.tar.gz")
    with tarfile.open(path) as tar:
        text = tar.extractfile("diagnose/findings.json").read().decode()
    assert "canary" not in text and text.count(diagnose.REDACTED) == 2


def test_a_missing_env_file_or_server_key_fails_a_missing_stack_secret_is_only_reported():
    present = [".env-present", "POSTGRES_PASSWORD"]
    assert diagnose.env_findings("/k/.env", [], ["POSTGRES_PASSWORD"], [])[0].fails
    (secret,) = diagnose.env_findings("/k/.env", present, ["POSTGRES_PASSWORD", "ADMIN_USERS"], [])
    assert "ADMIN_USERS" in secret.problem and not secret.fails
    (key,) = diagnose.env_findings("/k/.env", present, ["POSTGRES_PASSWORD"], ["LLAMACPP_Q4_API_KEY"])
    assert "LLAMACPP_Q4_API_KEY" in key.problem and key.fails
    assert diagnose.env_findings("/k/.env", present, ["POSTGRES_PASSWORD"], []) == []
