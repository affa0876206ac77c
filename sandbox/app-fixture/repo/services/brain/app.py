"""A stand-in for KITTY's brain: /health reports each dependency the real one needs.

Redis and Postgres are hard dependencies (503 without them); the llama.cpp
servers are reported, and make the status "degraded" when unreachable.
POST /api/query is the manual's end-to-end test (step 6.2): the query goes to
the Q4 server's chat completions, with its API key (LLAMACPP_Q4_API_KEY) when
it has one.

With KITTY_HOST_NETWORK=1 (the container on the host's network) it listens on
127.0.0.1:BRAIN_PORT and finds Redis and Postgres at their published loopback ports.
`app.py health` is the container's healthcheck: exit 0 when /health answers 200.
"""

import json
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def redis_ping(url: str) -> dict:
    parts = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 6379), timeout=2) as conn:
            conn.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = conn.recv(64)
        return {"ok": reply.startswith(b"+PONG"), "url": url}
    except OSError as exc:
        return {"ok": False, "url": url, "error": str(exc)}


def tcp(host: str, port: int) -> dict:
    try:
        socket.create_connection((host, port), timeout=2).close()
        return {"ok": True, "address": f"{host}:{port}"}
    except OSError as exc:
        return {"ok": False, "address": f"{host}:{port}", "error": str(exc)}


def llama(url: str) -> dict:
    if not url:
        return {"ok": False, "url": url, "error": "not configured"}
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=2) as reply:
            return {"ok": reply.status == 200, "url": url, "status": json.load(reply).get("status")}
    except (OSError, ValueError) as exc:
        return {"ok": False, "url": url, "error": str(exc)}


def query(body: dict) -> tuple[int, dict]:
    """Ask the Q4 server; the reply's text is the response."""
    url = os.environ.get("LLAMACPP_Q4_HOST", "").rstrip("/")
    if not url:
        return 503, {"error": "LLAMACPP_Q4_HOST is not configured"}
    request = urllib.request.Request(
        url + "/v1/chat/completions",
        data=json.dumps(
            {
                "messages": [{"role": "user", "content": str(body.get("query", ""))}],
                "max_tokens": 16,
                "temperature": 0,
            }
        ).encode(),
        headers={"Content-Type": "application/json"},
    )
    key = os.environ.get("LLAMACPP_Q4_API_KEY")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            answer = json.load(reply)
    except urllib.error.HTTPError as exc:
        return 502, {"error": f"{url} answered {exc.code}"}
    except (OSError, ValueError) as exc:
        return 502, {"error": f"{url}: {exc}"}
    text = answer["choices"][0]["message"]["content"]
    return 200, {"response": text, "tier": "local", "model": answer.get("model")}


HOST_NETWORK = os.environ.get("KITTY_HOST_NETWORK") == "1"


def listen_address() -> tuple[str, int]:
    if HOST_NETWORK:
        # Loopback only: on the host's network 0.0.0.0 would be every address of the host.
        return "127.0.0.1", int(os.environ.get("BRAIN_PORT", "8000"))
    return "0.0.0.0", 8000


def redis_url() -> str:
    if HOST_NETWORK:
        return f"redis://127.0.0.1:{os.environ.get('REDIS_PORT', '6379')}/0"
    return os.environ["REDIS_URL"]


def database_address() -> tuple[str, int]:
    if HOST_NETWORK:
        return "127.0.0.1", int(os.environ.get("POSTGRES_PORT", "5432"))
    return os.environ["DATABASE_HOST"], int(os.environ["DATABASE_PORT"])


def health() -> tuple[int, dict]:
    deps = {
        "redis": redis_ping(redis_url()),
        "postgres": tcp(*database_address()),
        "llamacpp_q4": llama(os.environ.get("LLAMACPP_Q4_HOST", "")),
    }
    if os.environ.get("LLAMACPP_F16_HOST"):
        deps["llamacpp_f16"] = llama(os.environ["LLAMACPP_F16_HOST"])
    hard = deps["redis"]["ok"] and deps["postgres"]["ok"]
    status = "ok" if hard and all(dep["ok"] for dep in deps.values()) else "degraded" if hard else "down"
    body = {
        "status": status,
        "offline_mode": os.environ.get("OFFLINE_MODE") == "true",
        # Which secrets reached the container, never their values.
        "secrets_present": sorted(k for k in ("OPENAI_API_KEY", "ADMIN_USERS") if os.environ.get(k)),
        "dependencies": deps,
    }
    return (200 if hard else 503), body


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.answer(*(health() if self.path == "/health" else (404, {"error": "not found"})))

    def do_POST(self):
        if self.path != "/api/query":
            return self.answer(404, {"error": "not found"})
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        except ValueError:
            return self.answer(400, {"error": "the body is not JSON"})
        self.answer(*query(body if isinstance(body, dict) else {}))

    def answer(self, code: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def healthcheck() -> int:
    host, port = listen_address()
    try:
        urllib.request.urlopen(f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/health", timeout=3)
    except (OSError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["health"]:
        sys.exit(healthcheck())
    ThreadingHTTPServer(listen_address(), Handler).serve_forever()
