"""diagnose: reading supervisor answers, naming stopped and crash-looping servers with remedies, redacting secrets."""

from __future__ import annotations

import copy
import tarfile

import pytest

from tasks import config
from tasks.runbook import diagnose
from tasks.supervise import control
from tests.plan.harness import group_data, simulated_platform

LINUX = simulated_platform("linux", "admin", "x86_64")
MAC = simulated_platform("macos", "admin", "arm64")
DEFAULTS = group_data()
FILES_OK = {"m/a.gguf": {"exists": True, "size": 10, "mtime": 5, "stamp": {"sha256": "x", "size": 10, "mtime": 5}}}
CANARY = "sk-canary-7f3a9c21d0"


def systemd(active, sub, restarts, status, pid):
    return control.status_of(
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
    state = control.status_of(MAC, printed)
    assert state["restarts"] == 4 and state["last_exit"] == "1" and not state["running"]
    assert control.status_of(MAC, "Could not find service")["state"] == "not loaded"


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


# --- redaction of secrets the code was not told about (the known list is empty) ---------------

UNKNOWN = [
    # (text as a log or a fact has it, what the bundle must hold instead)
    ("Authorization: Basic dXNlcjpjYW5hcnktYmFzaWM=", "Authorization: Basic ***redacted***"),
    ("proxy-authorization: Bearer canary-bearer-77", "proxy-authorization: Bearer ***redacted***"),
    ("authorization: canary-bare-key", "authorization: ***redacted***"),
    ("headers authorization=Token canary-tok-12", "headers authorization=Token ***redacted***"),
    ('-H "Authorization: Bearer canary-curl-1"', '-H "Authorization: Bearer ***redacted***"'),
    ("sent Bearer canary-anywhere-99 upstream", "sent Bearer ***redacted*** upstream"),
    ('{"api_key": "canary json 1", "model": "q4"}', '{"api_key": "***redacted***", "model": "q4"}'),
    ('{"password":"can\\"ary-2","user":"bob"}', '{"password":"***redacted***","user":"bob"}'),
    ('{"db_pass": 12345678, "port": 5432}', '{"db_pass": "***redacted***", "port": 5432}'),
    ("llama-server --api-key canary-space-3 --port 8083", "llama-server --api-key ***redacted*** --port 8083"),
    ("llama-server --api-key=canary-eq-4 --host x", "llama-server --api-key=***redacted*** --host x"),
    ("hf download --token 'canary quoted 5' repo", "hf download --token ***redacted*** repo"),
    ("--api-key-file /opt/kitty/keys/q4.key", "--api-key-file /opt/kitty/keys/q4.key"),
    (
        "DATABASE_URL=postgres://kitty:canary-pg-6@db:5432/kitty",
        "DATABASE_URL=postgres://kitty:***redacted***@db:5432/kitty",
    ),
    ("connecting to redis://:canary-redis-7@redis:6379/0", "connecting to redis://:***redacted***@redis:6379/0"),
    ("ADMIN_PASSWORD='canary two words' next", "ADMIN_PASSWORD=***redacted*** next"),
    ('SECRET_TOKEN="canary \\"three\\" words" tail', "SECRET_TOKEN=***redacted*** tail"),
    ("OPENAI_API_KEY=canary-env-8", "OPENAI_API_KEY=***redacted***"),
    ("password: canary yaml words", "password: ***redacted***"),
    ("X-Api-Key: canary-header-9", "X-Api-Key: ***redacted***"),
    ("Set-Cookie: session=canary-cookie-10; Path=/", "Set-Cookie: ***redacted***"),
    ("key sk-canaryAbCdEf0123456789xyz in a line", "key ***redacted*** in a line"),
    ("hf_canaryABCDEFGHIJKLMNOPQRST", "***redacted***"),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\ncanary-pem-11\n-----END OPENSSH PRIVATE KEY-----\nafter",
        "-----BEGIN OPENSSH PRIVATE KEY----- ***redacted***\nafter",
    ),
    # What must stay: nothing secret in it.
    ("error: connection refused at 10:00", "error: connection refused at 10:00"),
    ("https://example.org/a and ssh://git@github.com/o/r", "https://example.org/a and ssh://git@github.com/o/r"),
    ("--port 8083 --ctx-size 4096 MODEL=q4", "--port 8083 --ctx-size 4096 MODEL=q4"),
]


def test_each_kind_of_secret_is_redacted_without_being_known():
    """Every pattern does its own work: the known list is empty, and the result is exact (a pattern
    that redacts too little leaves a canary; one that redacts too much changes the text that stays)."""
    for text, expected in UNKNOWN:
        assert diagnose.redact(text, []) == expected, text


def test_the_bundle_holds_none_of_the_unknown_secrets_and_is_private(tmp_path):
    facts = {"log_tail": "\n".join(text for text, _ in UNKNOWN)}
    path = diagnose.bundle([], facts, [], tmp_path / "support" / "b.tar.gz")
    with tarfile.open(path) as tar:
        text = tar.extractfile("diagnose/findings.json").read().decode()
    assert "canary" not in text
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["b.tar.gz"]


def test_the_bundle_refuses_a_folder_others_can_enter_and_replaces_a_link(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(diagnose.BundleRefused, match=f"{shared} is open to others"):
        diagnose.bundle([], {}, [], shared / "b.tar.gz")
    assert list(shared.iterdir()) == []
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched\n")
    (private / "b.tar.gz").symlink_to(elsewhere)
    path = diagnose.bundle([], {}, [], private / "b.tar.gz")
    assert not path.is_symlink() and elsewhere.read_text() == "untouched\n"


def test_known_secrets_hold_the_servers_api_keys_and_this_hosts_backup_password(tmp_path, monkeypatch):
    monkeypatch.setenv("KITTY_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("KITTY_BACKUP_PASSWORD_STUDIO2_LOCAL", "own-backup-canary")
    data = copy.deepcopy(DEFAULTS)
    data["kitty_servers"]["q4"] = {**data["kitty_servers"]["q4"], "host": "10.0.0.5", "api_key_file": "/opt/k/q4.key"}
    data["kitty_stack"] = {**data["kitty_stack"], "secrets_file": None}
    cfg = config.load(data)
    known = diagnose.known_secrets(cfg, "studio2.local")
    key = (tmp_path / "keys" / "q4.key").read_text().strip()
    assert key in known and "own-backup-canary" in known


def test_a_known_secret_inside_a_longer_one_leaves_no_part_of_the_longer():
    # Replaced shortest first (or in name order, where the short one sorts last here), the short
    # value inside the long one would be redacted alone and the long one's rest left in clear.
    short, long = "Q9kshortvalue", "AQ9kshortvalue-tail42"
    text = f"first {long} then {short} ."
    assert diagnose.redact(text, [long, short]) == f"first {diagnose.REDACTED} then {diagnose.REDACTED} ."
    assert diagnose.redact(text, [short, long]) == f"first {diagnose.REDACTED} then {diagnose.REDACTED} ."
