"""compose: its tools on the host, `up -d` only when something differs, then each service's health.

    tools    Linux: the compose v2 plugin, downloaded by sha256. macOS with colima:
             Homebrew's docker-compose and docker-buildx, which the docker CLI (and
             compose's own check for buildx) find only through `cliPluginsExtraDirs`
             in the admin's ~/.docker/config.json
    up       when compose's own state (config-hash labels, container states, image
             ids) or an input (checkout, .env, override) differs; compose then
             recreates only the services whose configuration changed
    health   one wait per service with its own timeout: an HTTP path, Redis `PING`,
             Postgres `SELECT 1`, or a running (healthy) container

The manual's `compose down` + `up --build` on every start is what this replaces.
"""

from __future__ import annotations

import json
import shlex
from io import StringIO
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FactBase, FileUploadCommand, StringCommand, operation
from pyinfra.api.exceptions import DeployError, OperationError
from pyinfra.operations import files

from tasks import config
from tasks.app import runtime
from tasks.config import KittyConfig
from tasks.engine import operations
from tasks.host import layout
from tasks.host.platform import Platform

COMPOSE_PLUGIN = "/usr/local/lib/docker/cli-plugins/docker-compose"
ARCH = {"arm64": "aarch64", "aarch64": "aarch64", "x86_64": "x86_64", "amd64": "x86_64"}
# The override (layout.compose_override): JSON (YAML's subset), and one YAML tag, compose's
# `!reset`, where ports are dropped.
RESET_PORTS = "__kitty_reset_ports__"
# sed: every quoted stretch of an error message (and a quote left open to the end) becomes "...".
REDACT_QUOTED = "s/\"[^\"]*\"/\"...\"/g; s/'[^']*'/'...'/g; s/\"[^\"]*$/\"...\"/; s/'[^']*$/'...'/"
# Registry credentials the docker CLI keeps inline when it has no credsStore: a config
# holding one is never read into pyinfra's output (-vvv echoes every fact).
CREDENTIALS = '"(auth|identitytoken|registrytoken)"[[:space:]]*:[[:space:]]*"[^"]'


class Docker(runtime.Engine):
    """The engine's environment and sudo (runtime.Engine), and the compose command line."""

    def __init__(self, cfg: KittyConfig, plat: Platform, runtime: str, home: str | None):
        super().__init__(cfg, plat, runtime, home)
        files_args = ["-f", layout.compose_file(cfg)]
        if needs_override(cfg):
            files_args += ["-f", layout.compose_override(cfg)]
        # Homebrew's docker-compose, standalone (found on PATH), finds buildx the way
        # `docker` does, through cliPluginsExtraDirs (brew_plugins_found).
        args = [*plat.compose_argv, "-p", cfg.stack.project_name, *files_args, "--env-file", layout.env_file(cfg)]
        self.compose = " ".join(shlex.quote(arg) for arg in args)


# --- compose's tools -----------------------------------------------------------------


def plugin(cfg: KittyConfig, plat: Platform, runtime: str) -> list:
    """compose v2 as a docker CLI plugin where the OS packages none (Debian's docker.io)."""
    if plat.compose_standalone or runtime not in ("engine", "external"):
        return []
    compose_plugin = cfg.stack.compose_plugin
    arch = ARCH.get(plat.arch, plat.arch)
    files.directory(name="Docker CLI plugins folder", path=COMPOSE_PLUGIN.rpartition("/")[0], _sudo=plat.sudo)
    return [
        operations.verified_download(
            name="Install docker compose v2",
            src=compose_plugin.url.replace("{arch}", arch),
            dest=COMPOSE_PLUGIN,
            # Pinned (config.ComposePlugin): checked before it is moved into place.
            sha256=compose_plugin.sha256_for(arch),
            _sudo=plat.sudo,
        )
    ]


def brew_plugins_found(plat: Platform, runtime: str, home: str | None):
    """colima: point the admin's docker CLI at Homebrew's cli-plugins folder (buildx, compose)."""
    if runtime != "colima":
        return None
    return cli_plugins_dir(
        name="Docker CLI finds Homebrew's plugins (buildx)",
        config_path=f"{home}/.docker/config.json",
        plugin_dir=f"{plat.brew_prefix}/lib/docker/cli-plugins",
    )


@operation()
def cli_plugins_dir(config_path: str, plugin_dir: str):
    """`plugin_dir` in `cliPluginsExtraDirs` of the docker CLI config at `config_path`, other keys kept.

    Written only when the key lacks it; an existing file keeps its mode (the
    docker CLI creates it 0600), a new one is created 0600.
    """
    current = host.get_fact(DockerCliConfig, path=config_path)
    state = current["state"]
    if state == "credentials":
        host.noop(f"{config_path} holds registry credentials: not read, not changed")
        logger.warning(
            f"{host.name}: {config_path} holds registry credentials, which the deploy does not read. "
            f'Add "cliPluginsExtraDirs": ["{plugin_dir}"] to it by hand, or compose builds without BuildKit.'
        )
        return
    if state != "json" and state != "absent":
        raise OperationError(f"{config_path}: {current['error']}; fix or remove it")
    config = current["config"] or {}
    dirs = config.get("cliPluginsExtraDirs") or []
    if not isinstance(dirs, list):
        raise OperationError(f"{config_path}: cliPluginsExtraDirs is not a list")
    if plugin_dir in dirs:
        host.noop(f"{config_path} lists {plugin_dir} in cliPluginsExtraDirs")
        return
    merged = {**config, "cliPluginsExtraDirs": [plugin_dir, *dirs]}
    path = shlex.quote(config_path)
    if state == "absent":
        folder = shlex.quote(config_path.rpartition("/")[0])
        yield StringCommand(f"mkdir -p {folder} && umask 077 && touch {path}")
    # As the docker CLI writes it: tab-indented JSON.
    yield FileUploadCommand(StringIO(json.dumps(merged, indent="\t") + "\n"), config_path)


class DockerCliConfig(FactBase[dict]):
    """The docker CLI's config file: {"state", "config", "error"}.

    state: "absent", "json" (config: the parsed object), "credentials" (it holds
    registry credentials: not read), "invalid" (error says why).
    """

    def command(self, path: str) -> str:
        quoted = shlex.quote(path)
        return (
            f"if [ ! -e {quoted} ]; then echo absent; "
            f"elif [ ! -f {quoted} ]; then echo invalid; "
            f"elif grep -Eq {shlex.quote(CREDENTIALS)} {quoted}; then echo credentials; "
            f"else echo json; cat {quoted}; fi"
        )

    @staticmethod
    def default() -> dict:
        return {"state": "absent", "config": None, "error": None}

    def process(self, output) -> dict:
        kind = output[0].strip() if output else "absent"
        if kind == "absent" or kind == "credentials":
            return {"state": kind, "config": None, "error": None}
        if kind != "json":
            return {"state": "invalid", "config": None, "error": "not a regular file"}
        text = "\n".join(output[1:]).strip()
        try:
            # An empty file is what the docker CLI reads as no settings at all.
            config = json.loads(text) if text else {}
        except ValueError as error:
            return {"state": "invalid", "config": None, "error": f"not JSON ({error})"}
        if not isinstance(config, dict):
            return {"state": "invalid", "config": None, "error": "not a JSON object"}
        return {"state": "json", "config": config, "error": None}


# --- compose's input files -----------------------------------------------------------


def needs_override(cfg: KittyConfig) -> bool:
    return bool(cfg.stack.extra_hosts) or any(s.host_network for s in cfg.stack.services.values())


def override(cfg: KittyConfig, plat: Platform) -> list:
    """extra_hosts for every service, and the host's network for those asking for it, as a
    compose override next to the .env."""
    path = layout.compose_override(cfg)
    on_host_network = sorted(name for name, s in cfg.stack.services.items() if s.host_network)
    if on_host_network and plat.docker_in_a_vm:
        # The schema refuses it for a Mac runtime it names; `auto` and `external` are decided here.
        raise DeployError(
            f"{host.name}: kitty_stack.services.{on_host_network[0]}.host_network: {config.HOST_NETWORK_ON_A_MAC}"
        )
    if not needs_override(cfg):
        return [files.file(name="No compose override", path=path, present=False)]
    what = ", ".join(["extra_hosts"] * bool(cfg.stack.extra_hosts) + ["host network"] * bool(on_host_network))
    return [
        files.put(
            name=f"Compose override ({what})",
            src=StringIO(render_override(cfg)),
            dest=path,
            mode="644",
        )
    ]


def render_override(cfg: KittyConfig) -> str:
    """JSON (which is YAML), plus compose's `!reset` tag where a service's published ports are dropped."""
    hosts = [f"{name}:{address}" for name, address in sorted(cfg.stack.extra_hosts.items())]
    services: dict[str, dict] = {}
    for name, service in sorted(cfg.stack.services.items()):
        services[name] = {"extra_hosts": hosts} if hosts else {}
        if service.host_network:
            # The container shares the host's network: it publishes nothing, it listens itself.
            services[name]["network_mode"] = "host"
            services[name]["ports"] = RESET_PORTS
            # How the app knows: no service name resolves there, its peers are on loopback.
            services[name]["environment"] = {"KITTY_HOST_NETWORK": "1"}
        if not services[name]:
            del services[name]
    text = json.dumps({"services": services}, indent=2) + "\n"
    # `!reset []` drops the compose file's `ports`: on the host's network there is nothing to publish.
    return text.replace(json.dumps(RESET_PORTS), "!reset []")


# --- compose up and health ----------------------------------------------------------


def up(cfg: KittyConfig, docker: Docker, *, runtime_changed: bool, inputs: list) -> None:
    """`up -d` and the health waits, only when compose's state or an input (checkout first) differs."""
    stack = cfg.stack
    checkout_op, *file_ops = inputs
    state = host.get_fact(ComposeState, compose=docker.compose, project=stack.project_name,
                          _env=docker.env, _sudo=docker.sudo)  # fmt: skip
    reasons = drift(state, list(stack.services))
    # Judged against the checkout on the host: when a new ref is checked out first, its compose
    # file may well have the service (and the health wait names it if it still does not).
    if state["ok"] and not checkout_op.will_change and any("not in the compose file" in r for r in reasons):
        raise DeployError(f"{host.name}: " + "; ".join(r for r in reasons if "not in the compose file" in r))
    if checkout_op.will_change:
        reasons.append("the checkout changes")
    if any(op.will_change for op in file_ops):
        reasons.append("the .env or the compose override changes")
    if runtime_changed and not reasons:
        reasons.append("the container runtime changed")
    if not reasons:
        return
    compose_up(
        name="docker compose up",
        compose=docker.compose,
        build=checkout_op.will_change or not state["ok"],
        reasons=reasons,
        _env=docker.env,
        _sudo=docker.sudo,
    )
    health(
        name="Wait for the stack's health",
        compose=docker.compose,
        services={name: (s.port, s.health, s.health_timeout) for name, s in stack.services.items()},
        _env=docker.env,
        _sudo=docker.sudo,
    )


@operation()
def compose_up(compose: str, build: bool, reasons: list[str]):
    """`docker compose up -d`: compose recreates only the services whose config hash or image changed."""
    host.log(f"compose up: {'; '.join(reasons)}", logger.info)
    yield f"{compose} up -d --remove-orphans{' --build' if build else ''} --quiet-pull 2>&1"


@operation()
def health(compose: str, services: dict):
    """One wait per service, each with its own timeout; the failure names the service and its last answer."""
    for name, (port, check, timeout) in services.items():
        yield StringCommand(_probe_loop(name, _probe(compose, name, port, check), int(timeout)))


def _probe(compose: str, service: str, port: int | None, check: str | None) -> str:
    exec_ = f"{compose} exec -T {shlex.quote(service)}"
    if check == "redis":
        return f"{exec_} redis-cli ping | grep -qx PONG"
    if check == "postgres":
        # The container's own POSTGRES_USER/DB: nothing secret on this command line.
        select = 'psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" -tAc \'SELECT 1\''
        return f"{exec_} sh -c {shlex.quote(select)} | grep -qx 1"
    if check:
        # Quoted although the schema allows URL path characters only: this runs with sudo.
        return f"curl -fsS -o /dev/null --max-time 5 {shlex.quote(f'http://127.0.0.1:{int(port)}{check}')}"
    # No probe: running, and healthy if the image defines a healthcheck.
    fmt = "{{.State.Status}}{{if .State.Health}}/{{.State.Health.Status}}{{end}}"
    return (
        f'id=$({compose} ps -q {shlex.quote(service)}) && [ -n "$id" ] && '
        f"docker inspect --format {shlex.quote(fmt)} $id | grep -Eqx 'running(/healthy)?'"
    )


def _probe_loop(service: str, probe: str, timeout: int) -> str:
    return (
        f"i=0; until out=$({{ {probe}; }} 2>&1); do "
        f'if [ "$i" -ge {timeout} ]; then '
        f'echo "stack service {service} is not healthy after {timeout}s: $(echo "$out" | tail -n 3)" >&2; exit 1; fi; '
        "i=$((i + 2)); sleep 2; done"
    )


# --- What compose has ------------------------------------------------------------------


class ComposeState(FactBase[dict]):
    """What compose has for a project, and what its files on disk ask for.

        {"ok": True, "error": None,
         "services": ["brain", "redis"],                 # those `config --hash '*'` names
         "hashes": {"brain": "3f2a...", ...},            # `config --hash '*'`, as compose labels them
         "containers": {"brain": {"id": "...", "state": "running", "health": "healthy",
                                  "hash": "3f2a...", "image_current": True}}}

    `ok` is False (with `error`) when the files are missing, compose rejects
    them, or the engine does not answer: the caller plans an `up` anyway.
    Never prints a value of the .env: at -vvv pyinfra echoes every fact's output.
    """

    def command(self, compose: str, project: str) -> str:
        label = f"com.docker.compose.project={project}"
        inspect = (
            '{{index .Config.Labels "com.docker.compose.service"}} {{.Id}} {{.State.Status}} '
            "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} "
            '{{index .Config.Labels "com.docker.compose.config-hash"}} {{.Image}} {{.Config.Image}}'
        )
        # Each line is tagged, so one failed step cannot pass for another's output. compose's
        # error may quote a line of the .env (a secret): quoted text is blanked on the host,
        # before pyinfra (-vvv) or the log can show it. One compose run (`config --hash` names
        # every service with its hash; a line that is not a name and a hash, a warning, is
        # skipped) and one `docker inspect` for all containers: each compose run costs ~0.15 s.
        return (
            f"hashes=$({compose} config --hash '*' 2>&1) || "
            f'{{ printf "error %s\\n" "$hashes" | tr "\\n" " " | sed {shlex.quote(REDACT_QUOTED)}; echo; exit 0; }}; '
            'printf "%s\\n" "$hashes" | while read -r s h; do '
            'case $h in "" | *[!0-9a-f]*) continue ;; esac; [ "${#h}" -eq 64 ] || continue; '
            'echo "service $s"; echo "hash $s $h"; done; '
            f"ids=$(docker ps -aq --filter label={shlex.quote(label)} "
            "--filter label=com.docker.compose.oneoff=False); "
            '[ -z "$ids" ] || '
            f"docker inspect --format {shlex.quote(inspect)} $ids | "
            "while read -r s id st health config_hash image wanted; do "
            # The image its tag names now: a rebuilt or pulled image means the container is stale.
            'now=$(docker image inspect --format "{{.Id}}" "$wanted" </dev/null 2>/dev/null || echo missing); '
            'echo "container $s $id $st $health $config_hash $([ "$now" = "$image" ] && echo current || echo stale)"; '
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
