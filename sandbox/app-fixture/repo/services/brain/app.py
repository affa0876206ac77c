"""A stand-in for KITTY's brain: /health reports each dependency the real one needs.

Redis and Postgres are hard dependencies (503 without them); the llama.cpp
servers are reported, and make the status "degraded" when unreachable.
"""

import json
import os
import socket
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


def health() -> tuple[int, dict]:
    deps = {
        "redis": redis_ping(os.environ["REDIS_URL"]),
        "postgres": tcp(os.environ["DATABASE_HOST"], int(os.environ["DATABASE_PORT"])),
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
        code, body = health() if self.path == "/health" else (404, {"error": "not found"})
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
