"""Facts of the application stack: the container engine, the app checkout, compose's own state.

None of them ever prints a value of the .env: at -vvv pyinfra echoes every
fact's output, so they read hashes, names and states only.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra.api import FactBase

EXIT_MARKER = "kitty-exit="


class DockerInfo(FactBase[dict]):
    """Whether the engine answers `docker info`: {"ok": True, "version": "27.3.1", "error": None}."""

    def command(self) -> str:
        return (
            "if ! command -v docker >/dev/null 2>&1; then echo 'error docker: command not found'; exit 0; fi; "
            "out=$(docker info --format '{{.ServerVersion}}' 2>&1); rc=$?; "
            'if [ "$rc" -eq 0 ]; then echo "version $out"; else echo "error $out" | tr "\\n" " "; echo; fi'
        )

    @staticmethod
    def default() -> dict:
        return {"ok": False, "version": None, "error": "no answer"}

    def process(self, output) -> dict:
        text = " ".join(line.strip() for line in output).strip()
        kind, _, rest = text.partition(" ")
        if kind == "version" and rest:
            return {"ok": True, "version": rest, "error": None}
        return {"ok": False, "version": None, "error": rest[:300] or "no answer"}


class GitCheckout(FactBase[dict]):
    """The app checkout at `path`: {"exists", "head", "wanted", "origin"}.

    `wanted` is `ref` resolved in the local clone (None when the clone does not
    have it yet: it must be fetched).
    """

    def command(self, path: str, ref: str | None) -> str:
        git = f"git -C {shlex.quote(path)}"
        wanted = f"echo wanted $({git} rev-parse -q --verify {shlex.quote((ref or 'HEAD') + '^{commit}')})"
        return (
            f"if [ ! -d {shlex.quote(path + '/.git')} ]; then exit 0; fi; "
            f"echo head $({git} rev-parse -q --verify HEAD); {wanted}; "
            f"echo origin $({git} config --get remote.origin.url)"
        )

    @staticmethod
    def default() -> dict:
        return {"exists": False, "head": None, "wanted": None, "origin": None}

    def process(self, output) -> dict:
        facts: dict[str, Any] = {"exists": True, "head": None, "wanted": None, "origin": None}
        for line in output:
            key, _, value = line.strip().partition(" ")
            if key in facts:
                facts[key] = value.strip() or None
        return facts


class ComposeState(FactBase[dict]):
    """What compose has for a project, and what its files on disk ask for.

        {"ok": True, "error": None,
         "services": ["brain", "redis"],                 # `config --services`
         "hashes": {"brain": "3f2a...", ...},            # `config --hash '*'`, as compose labels them
         "containers": {"brain": {"id": "...", "state": "running", "health": "healthy",
                                  "hash": "3f2a...", "image_current": True}}}

    `ok` is False (with `error`) when the files are missing, compose rejects
    them, or the engine does not answer: the caller plans an `up` anyway.
    """

    def command(self, compose: str, project: str) -> str:
        label = f"com.docker.compose.project={project}"
        inspect = (
            '{{index .Config.Labels "com.docker.compose.service"}} {{.Id}} {{.State.Status}} '
            "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} "
            '{{index .Config.Labels "com.docker.compose.config-hash"}} {{.Image}} {{.Config.Image}}'
        )
        # Each line is tagged, so one failed step cannot pass for another's output.
        return (
            f"services=$({compose} config --services 2>&1) || "
            f'{{ echo "error $services" | tr "\\n" " "; echo; exit 0; }}; '
            'for s in $services; do echo "service $s"; done; '
            f"{compose} config --hash '*' 2>/dev/null | sed 's/^/hash /'; "
            f"for id in $(docker ps -aq --filter label={shlex.quote(label)} "
            "--filter label=com.docker.compose.oneoff=False); do "
            f"set -- $(docker inspect --format {shlex.quote(inspect)} $id); "
            # The image its tag names now: a rebuilt or pulled image means the container is stale.
            'now=$(docker image inspect --format "{{.Id}}" "$7" 2>/dev/null || echo missing); '
            'echo "container $1 $2 $3 $4 $5 $([ "$now" = "$6" ] && echo current || echo stale)"; '
            "done"
        )

    @staticmethod
    def default() -> dict:
        return {"ok": False, "error": "no answer", "services": [], "hashes": {}, "containers": {}}

    def process(self, output) -> dict:
        return parse_compose_state(output)


def parse_compose_state(lines) -> dict:
    state: dict[str, Any] = {"ok": True, "error": None, "services": [], "hashes": {}, "containers": {}}
    for line in lines:
        kind, _, rest = line.strip().partition(" ")
        fields = rest.split()
        if kind == "error":
            return {**state, "ok": False, "error": rest.strip()[:300] or "compose failed"}
        if kind == "service" and fields:
            state["services"].append(fields[0])
        elif kind == "hash" and len(fields) == 2:
            state["hashes"][fields[0]] = fields[1]
        elif kind == "container" and len(fields) == 6:
            service, container_id, status, health, config_hash, image = fields
            state["containers"][service] = {
                "id": container_id,
                "state": status,
                "health": health,
                "hash": config_hash,
                "image_current": image == "current",
            }
    return state


def drift(state: dict, wanted_services: list[str]) -> list[str]:
    """Why `docker compose up` is needed, one reason per service; empty when compose has it all."""
    if not state["ok"]:
        return [f"compose state unknown ({state['error']})"]
    reasons = []
    for service in state["services"]:
        container = state["containers"].get(service)
        if container is None:
            reasons.append(f"{service}: no container")
        elif container["state"] != "running":
            reasons.append(f"{service}: {container['state']}")
        elif container["hash"] != state["hashes"].get(service):
            reasons.append(f"{service}: configuration changed")
        elif not container["image_current"]:
            reasons.append(f"{service}: image changed")
    missing = [name for name in wanted_services if name not in state["services"]]
    reasons += [f"{name}: in kitty_stack.services but not in the compose file" for name in missing]
    return reasons
