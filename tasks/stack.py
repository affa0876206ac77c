"""The KITTY application stack: a container runtime, the app checkout, a secrets-safe .env, compose.

    runtime     colima under launchd (macOS, no GUI login needed), or the Linux
                Docker engine, or an engine that already answers; then `docker info`
    checkout    the app repository at the pinned ref, into kitty_root
    .env        rendered from templates/kitty.env.j2, mode 0600; secrets from the
                operator's environment or a git-ignored file on the controller
    compose     `up -d` only when compose's own state (config-hash labels,
                container states, image ids) or an input file differs; then each
                service's health, Postgres `SELECT 1` and Redis `PING`

The manual's `compose down` + `up --build` on every start is what this replaces:
a converged host plans nothing here, and compose recreates only the services
whose configuration changed.
"""

from __future__ import annotations

import os
import shlex
from io import StringIO
from pathlib import Path

import jinja2
from pyinfra import host, logger
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.deb import DebPackages
from pyinfra.facts.server import Home
from pyinfra.operations import apt, files, systemd

from tasks import launchd, operations
from tasks.config import KittyConfig, Stack, service_env_name
from tasks.platform import Platform
from tasks.stack_facts import ComposeState, DockerInfo, GitCheckout, drift

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
ENV_TEMPLATE = "kitty.env.j2"
# Runtimes each OS can use; the first is what "auto" means there.
RUNTIMES = {"macos": ("colima", "docker-desktop", "orbstack", "external"), "linux": ("engine", "external")}
# What colima needs from Homebrew: the VM, the docker CLI, compose v2 (run standalone:
# brew's plugin is not on the CLI's plugin path without editing ~/.docker/config.json).
COLIMA_FORMULAE = ("colima", "docker", "docker-compose")
COLIMA_LABEL = "com.kitty.colima"
COMPOSE_PLUGIN = "/usr/local/lib/docker/cli-plugins/docker-compose"
# The package's own engine never runs where the engine is external: its units point at /dev/null.
ENGINE_UNITS = ("docker.service", "docker.socket", "containerd.service")
OVERRIDE_FILE = ".kitty-ops.compose.json"
ARCH = {"arm64": "aarch64", "aarch64": "aarch64", "x86_64": "x86_64", "amd64": "x86_64"}


class Docker:
    """How to talk to the engine on this host: environment, sudo, the compose command line."""

    def __init__(self, cfg: KittyConfig, plat: Platform, runtime: str, home: str | None):
        self.env = dict(plat.env)
        if runtime == "colima":
            # Explicit, so neither the CLI's current context nor a stray DOCKER_HOST decides.
            self.env["DOCKER_HOST"] = f"unix://{home}/.colima/{cfg.stack.colima.profile}/docker.sock"
        # A Linux admin is not necessarily in the docker group (that needs a new login).
        self.sudo = plat.os == "linux" and plat.sudo
        root = cfg.paths.kitty_root
        files_args = ["-f", f"{root}/{cfg.stack.compose_file}"]
        if cfg.stack.extra_hosts:
            files_args += ["-f", f"{root}/{OVERRIDE_FILE}"]
        base = ["docker-compose"] if plat.os == "macos" else ["docker", "compose"]
        args = [*base, "-p", cfg.stack.project_name, *files_args, "--env-file", env_path(cfg)]
        self.compose = " ".join(shlex.quote(arg) for arg in args)


def runtime_of(stack: Stack, plat: Platform) -> str:
    allowed = RUNTIMES[plat.os]
    if stack.runtime == "auto":
        return allowed[0]
    if stack.runtime not in allowed:
        raise DeployError(
            f"{host.name}: kitty_stack.runtime {stack.runtime!r} does not run on {plat.os} "
            f"(choose from auto, {', '.join(allowed)})"
        )
    return stack.runtime


def env_path(cfg: KittyConfig) -> str:
    return f"{cfg.paths.kitty_root}/{cfg.stack.env_file}"


@deploy("Application stack")
def up(cfg: KittyConfig, plat: Platform) -> list[OperationMeta]:
    """Bring the stack to its wanted state. Returns the checkout operation: a moved checkout
    means services outside compose that run from it (the images service) restart."""
    stack = cfg.stack
    if not stack.enabled:
        return []
    runtime = runtime_of(stack, plat)
    home = host.get_fact(Home) if runtime == "colima" else None
    docker = Docker(cfg, plat, runtime, home)

    runtime_changed = _runtime(cfg, plat, runtime, home, docker)
    inputs = [
        _checkout(cfg, plat),
        _env_file(cfg, plat),
        *_override(cfg, plat),
    ]
    _compose_up(cfg, docker, runtime_changed=runtime_changed, inputs=inputs)
    return [inputs[0]]


# --- The container runtime --------------------------------------------------


def _runtime(cfg: KittyConfig, plat: Platform, runtime: str, home: str | None, docker: Docker) -> bool:
    """Install and start what `runtime` needs; True when something will change (then wait for the engine)."""
    ops = []
    if runtime == "colima":
        ops.append(_colima(cfg, plat, home))
    elif runtime == "engine":
        ops += _apt_docker(plat)
        ops.append(_compose_plugin(cfg, plat))
        ops.append(
            systemd.service(name="Run the Docker engine", service="docker", running=True, enabled=True, _sudo=plat.sudo)
        )
    elif runtime == "external" and plat.os == "linux":
        # Only the client of docker.io: mask its engine before the package can start it.
        masks = [
            files.link(
                name=f"Mask {unit} (the engine is external)",
                path=f"/etc/systemd/system/{unit}",
                target="/dev/null",
                _sudo=plat.sudo,
            )
            for unit in ENGINE_UNITS
        ]
        if any(mask.will_change for mask in masks):
            systemd.daemon_reload(name="Reload systemd (masked engine units)", _sudo=plat.sudo)
        ops += masks + _apt_docker(plat)
        ops.append(_compose_plugin(cfg, plat))
    changed = any(op.will_change for op in ops)

    info = host.get_fact(DockerInfo, _env=docker.env, _sudo=docker.sudo)
    if runtime in ("docker-desktop", "orbstack") and not info["ok"]:
        app = {"docker-desktop": "Docker Desktop", "orbstack": "OrbStack"}[runtime]
        raise DeployError(
            f"{host.name}: kitty_stack.runtime is {runtime!r} but `docker info` does not answer ({info['error']}). "
            f"{app} only starts in a GUI login session: log in at the Mac, start {app} (and let it start at "
            "login), or use runtime 'colima', which the deploy starts headless."
        )
    if changed or not info["ok"]:
        engine_answers(
            name="Wait for the container engine (docker info)",
            timeout=cfg.stack.runtime_timeout,
            what=_engine_name(runtime),
            _env=docker.env,
            _sudo=docker.sudo,
        )
    return changed


def _engine_name(runtime: str) -> str:
    return {
        "colima": "colima's Docker engine",
        "engine": "the Docker engine (systemd unit docker)",
        "external": "the external Docker engine (DOCKER_HOST or /var/run/docker.sock)",
    }.get(runtime, runtime)


def _colima(cfg: KittyConfig, plat: Platform, home: str | None):
    missing = [formula for formula in COLIMA_FORMULAE if formula not in cfg.packages.brew]
    if missing:
        raise DeployError(
            f"{host.name}: kitty_stack.runtime 'colima' needs {', '.join(missing)} in kitty_packages.brew"
        )
    if not home:
        raise DeployError(f"{host.name}: cannot tell the home folder of {plat.user!r} (colima keeps its VM there)")
    plist = colima_plist(cfg, plat, home)
    return launchd.job(name="Run colima at boot (LaunchDaemon)", job_label=COLIMA_LABEL, plist=plist, _sudo=plat.sudo)


def colima_plist(cfg: KittyConfig, plat: Platform, home: str) -> str:
    """`colima start --foreground` as a LaunchDaemon running as the admin.

    Not a LaunchAgent (`brew services`): those only load in a GUI login, which a
    headless Mac reached over SSH never has. launchd restarts it if it exits.
    """
    colima = cfg.stack.colima
    arguments = [f"{plat.brew_prefix}/bin/colima", "start", "--foreground", "--profile", colima.profile]
    arguments += ["--cpu", str(colima.cpu), "--memory", str(colima.memory_gib), "--disk", str(colima.disk_gib)]
    return launchd.render_plist(
        job_label=COLIMA_LABEL,
        arguments=arguments,
        working_directory=home,
        log=f"{cfg.paths.logs_dir}/colima.log",
        environment={**plat.env, "HOME": home, "USER": plat.user},
        throttle_interval=cfg.launchd.throttle_interval,
        user=plat.user,
    )


def _apt_docker(plat: Platform) -> list:
    if "docker.io" in (host.get_fact(DebPackages) or {}):
        return []
    return [
        apt.update(name="Refresh the apt index (docker.io)", _sudo=plat.sudo),
        apt.packages(
            name="Install docker.io",
            packages=["docker.io"],
            no_recommends=True,
            _sudo=plat.sudo,
            _env={"DEBIAN_FRONTEND": "noninteractive"},
        ),
    ]


def _compose_plugin(cfg: KittyConfig, plat: Platform):
    plugin = cfg.stack.compose_plugin
    arch = ARCH.get(plat.arch, plat.arch)
    files.directory(name="Docker CLI plugins folder", path=COMPOSE_PLUGIN.rpartition("/")[0], _sudo=plat.sudo)
    return files.download(
        name="Install docker compose v2",
        src=plugin.url.replace("{arch}", arch),
        dest=COMPOSE_PLUGIN,
        mode="755",
        sha256sum=plugin.sha256,
        _sudo=plat.sudo,
    )


@operation()
def engine_answers(timeout: int, what: str):
    """Wait until `docker info` answers; fail naming the engine and its last error."""
    yield StringCommand(
        f"i=0; until out=$(docker info --format '{{{{.ServerVersion}}}}' 2>&1); do "
        f'if [ "$i" -ge {int(timeout)} ]; then '
        f'echo "{what} did not answer docker info within {int(timeout)}s: $out" >&2; exit 1; fi; '
        "i=$((i + 2)); sleep 2; done"
    )


# --- The application checkout --------------------------------------------------


def _checkout(cfg: KittyConfig, plat: Platform):
    owner = cfg.paths.service_user or plat.user
    root = cfg.paths.kitty_root
    files.directory(name="Application folder", path=root, user=owner, recursive=False, _sudo=plat.sudo)
    as_owner = {"_sudo": True, "_sudo_user": owner} if owner != plat.user else {}
    return checkout(
        name=f"Check out the application at {cfg.stack.ref or 'its default branch (unpinned)'}",
        path=root,
        url=cfg.stack.repo_url,
        ref=cfg.stack.ref,
        _env=plat.env,
        **as_owner,
    )


@operation()
def checkout(path: str, url: str, ref: str | None):
    """The git work tree at `path` checked out at `ref` (detached), from `url`.

    Works in a folder that already has files (the manual keeps .logs inside the
    checkout): init + fetch instead of clone. `ref` None: the default branch,
    checked out once and then left alone.
    """
    state = host.get_fact(GitCheckout, path=path, ref=ref)
    git = f"git -C {shlex.quote(path)}"
    commands = []
    if not state["exists"]:
        commands += [f"{git} init -q", f"{git} remote add origin {shlex.quote(url)}"]
    elif state["origin"] != url:
        commands.append(f"{git} remote set-url origin {shlex.quote(url)}")
    if ref is None:
        if state["exists"] and state["head"]:
            host.noop(f"{path} is checked out and kitty_stack.ref is not pinned: left as it is")
            return
        commands += [
            f"{git} fetch -q origin",
            f"{git} remote set-head origin --auto >/dev/null",
            f'branch=$({git} symbolic-ref --short refs/remotes/origin/HEAD) && {git} checkout -q --track "$branch"',
        ]
        yield from _trusting_local_mirror(url, commands)
        return
    if state["exists"] and state["origin"] == url and state["wanted"] and state["head"] == state["wanted"]:
        host.noop(f"{path} is at {ref} ({state['head'][:12]})")
        return
    if not state["wanted"] or commands:
        # A commit id is fetched by name too: a tag or branch fetch may not bring it.
        fetch_sha = f" || {git} fetch -q origin {shlex.quote(ref)}" if _looks_like_sha(ref) else ""
        commands.append(f"{git} fetch -q --tags --force origin{fetch_sha}")
    commands.append(f"{git} checkout -q --detach {shlex.quote(ref + '^{commit}')}")
    yield from _trusting_local_mirror(url, commands)


def _trusting_local_mirror(url: str, commands: list[str]) -> list[str]:
    """A local mirror (NAS, USB disk) usually belongs to another user, and git
    refuses it as "dubious ownership". The operator chose this URL, so trust it,
    in a git config of our own that includes the user's: git before 2.41 takes
    safe.directory only from a global or system file (as templates/llama-build.sh)."""
    if not url.startswith(("file://", "/")):
        return commands
    path = url.removeprefix("file://")
    trust = (
        "cfg=$(mktemp) && trap 'rm -f \"$cfg\"' EXIT && "
        "printf '[include]\\n\\tpath = ~/.gitconfig\\n[safe]\\n\\tdirectory = %s\\n' "
        f'{shlex.quote(path)} > "$cfg" && '
        'export GIT_CONFIG_GLOBAL="$cfg"'
    )
    return [" && ".join([trust, *commands])]


def _looks_like_sha(ref: str) -> bool:
    return 7 <= len(ref) <= 40 and all(c in "0123456789abcdef" for c in ref)


# --- The .env ---------------------------------------------------------------------


def secret_values(stack: Stack, root: Path | None = None) -> dict[str, str]:
    """The operator's secrets for the names in kitty_stack.secrets: environment first, then the file.

    Read on the controller; missing ones are left out of the .env (their names are logged).
    """
    from_file: dict[str, str] = {}
    if stack.secrets_file:
        path = Path(stack.secrets_file)
        if not path.is_absolute():
            path = (root or Path.cwd()) / path
        if path.exists():
            from_file = parse_dotenv(path.read_text(), str(path))
    values = {}
    for name in stack.secrets:
        value = os.environ.get(name, from_file.get(name))
        if value:
            if "'" in value or "\n" in value:
                # The name only: the value is the secret.
                raise DeployError(f"secret {name}: a .env value cannot hold a single quote or a newline")
            values[name] = value
    return values


def parse_dotenv(text: str, where: str) -> dict[str, str]:
    """NAME=value lines; # comments; one pair of surrounding quotes is removed."""
    values = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not name.strip().isidentifier():
            raise DeployError(f"{where}:{number}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def env_values(cfg: KittyConfig) -> dict[str, str]:
    """The non-secret .env values: group_data's env, service ports, the model servers' URLs."""
    stack = cfg.stack
    values = dict(stack.env)
    for name, service in stack.services.items():
        if service.port:
            values[f"{service_env_name(name)}_PORT"] = str(service.port)
    for name, server in cfg.enabled_servers().items():
        values[f"LLAMACPP_{service_env_name(name)}_HOST"] = f"http://{stack.model_host}:{server.port}"
    return values


def render_env(cfg: KittyConfig, secrets: dict[str, str]) -> str:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return environment.get_template(ENV_TEMPLATE).render(values=env_values(cfg), secrets=secrets)


def _env_file(cfg: KittyConfig, plat: Platform):
    secrets = secret_values(cfg.stack)
    missing = [name for name in cfg.stack.secrets if name not in secrets]
    if missing:
        logger.warning(f"{host.name}: no value for {', '.join(missing)} (kitty_stack.secrets): left out of the .env")
    owner = cfg.paths.service_user or plat.user
    return operations.secret_file(
        name=f"Write {cfg.stack.env_file} (mode 0600, contents never shown)",
        content=render_env(cfg, secrets),
        dest=env_path(cfg),
        user=owner,
        _sudo=owner != plat.user,
    )


def _override(cfg: KittyConfig, plat: Platform) -> list:
    """extra_hosts for every service, as a compose override next to the .env (JSON is YAML)."""
    path = f"{cfg.paths.kitty_root}/{OVERRIDE_FILE}"
    if not cfg.stack.extra_hosts:
        return [files.file(name="No compose override", path=path, present=False)]
    return [
        files.put(
            name="Compose override (extra_hosts)",
            src=StringIO(render_override(cfg)),
            dest=path,
            mode="644",
        )
    ]


def render_override(cfg: KittyConfig) -> str:
    import json

    hosts = [f"{name}:{address}" for name, address in sorted(cfg.stack.extra_hosts.items())]
    services = {name: {"extra_hosts": hosts} for name in sorted(cfg.stack.services)}
    return json.dumps({"services": services}, indent=2) + "\n"


# --- compose up and health ----------------------------------------------------------


def _compose_up(cfg: KittyConfig, docker: Docker, *, runtime_changed: bool, inputs: list) -> None:
    stack = cfg.stack
    checkout_op, *file_ops = inputs
    state = host.get_fact(ComposeState, compose=docker.compose, project=stack.project_name,
                          _env=docker.env, _sudo=docker.sudo)  # fmt: skip
    reasons = drift(state, list(stack.services))
    if state["ok"] and any("not in the compose file" in reason for reason in reasons):
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
        return f"curl -fsS -o /dev/null --max-time 5 http://127.0.0.1:{port}{check}"
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
