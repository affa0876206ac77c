"""The one description of a KITTY host, validated before any operation is planned.

group_data holds plain values under `kitty_*` names; `load()` turns them into a
`KittyConfig` or raises `ConfigError` naming each bad field and why.
"""

from __future__ import annotations

import re
import runpy
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pyinfra.api.exceptions import DeployError

from tasks.server_args import MANAGED_FLAGS, SECRET_FLAGS, flag_name

# Each top-level group_data name maps to one section of the config.
SECTIONS = {
    "kitty_paths": "paths",
    "kitty_packages": "packages",
    "kitty_llamacpp": "llamacpp",
    "kitty_models": "models",
    "kitty_model_policy": "model_policy",
    "kitty_servers": "servers",
    "kitty_stack": "stack",
    "kitty_images": "images",
    "kitty_launchd": "launchd",
    "kitty_macos": "macos",
    "kitty_verify": "verify",
}

Port = Annotated[int, Field(ge=1, le=65535)]
PositiveInt = Annotated[int, Field(gt=0)]
AbsPath = Annotated[str, Field(pattern=r"^/")]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")]
SHA256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
LABEL_PREFIX = r"^[A-Za-z0-9][A-Za-z0-9-]*(\.[A-Za-z0-9-]+)*\.$"
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL", re.IGNORECASE)


class ConfigError(DeployError):
    """Bad host data. The message lists every problem, one per line."""


class Strict(BaseModel):
    # A typo in group_data must fail loudly, not fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(Strict):
    kitty_root: AbsPath
    models_dir: AbsPath
    logs_dir: AbsPath
    # Versioned llama.cpp builds, the `current` link, stamps: owned by the deploy.
    opt_dir: AbsPath
    # The account the model servers and the app checkout belong to.
    service_user: Name | None = None


# Homebrew formulae renamed in homebrew-core (formula_renames.json): `brew list` reports
# the new name, so an old name would look missing and be installed on every converge.
RENAMED_FORMULAE = {"huggingface-cli": "hf"}


class Packages(Strict):
    brew: list[str] = []
    apt: list[str] = []
    # On Linux the Hugging Face CLI lives in a venv of its own (<opt_dir>/hf).
    hf_pip: str = "huggingface_hub==2.4.0"

    @field_validator("brew")
    @classmethod
    def _no_renamed_formulae(cls, value: list[str]) -> list[str]:
        # Refused rather than translated: the data should say what `brew list` will report.
        renamed = [f"{old!r} is now {RENAMED_FORMULAE[old]!r}" for old in value if old in RENAMED_FORMULAE]
        if renamed:
            raise ValueError(
                f"renamed Homebrew formulae ({'; '.join(renamed)}): brew lists them under the new name, "
                "so the old one would be installed again on every converge"
            )
        return value


class LlamaCpp(Strict):
    git_url: str
    ref: str = Field(min_length=1)
    # auto: Metal on macOS, CPU on Linux.
    backend: Literal["auto", "metal", "cpu", "cuda"] = "auto"
    build_number: int | None = None
    cmake_options: dict[str, str] = {}
    targets: list[str] = ["llama-server"]
    keep_builds: PositiveInt = 3
    # Where ccache keeps compiled objects; None: <opt_dir>/llama.cpp/ccache.
    ccache_dir: AbsPath | None = None


class ModelFile(Strict):
    name: str = Field(min_length=1)
    # Exact bytes when known; `approx_gb` otherwise, used for disk and memory budgets.
    size: PositiveInt | None = None
    approx_gb: float | None = Field(default=None, gt=0)
    sha256: SHA256 | None = None


class Model(Strict):
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    # A commit sha. None means "not pinned": downloads are refused unless
    # kitty_model_policy.allow_unpinned is set.
    revision: str | None
    dir: str = Field(pattern=r"^[^/].*$")
    kind: Literal["text", "vision", "mmproj"] = "text"
    files: list[ModelFile] = Field(min_length=1)
    note: str = ""
    # Download even while no enabled server uses it (stage a big model before switching to it).
    prefetch: bool = False
    # The model's attention shape, for the GPU memory budget's KV cache estimate.
    n_layers: PositiveInt | None = None
    n_kv_heads: PositiveInt | None = None
    head_dim: PositiveInt | None = None

    @model_validator(mode="after")
    def _dims_all_or_none(self) -> Model:
        dims = {"n_layers": self.n_layers, "n_kv_heads": self.n_kv_heads, "head_dim": self.head_dim}
        missing = [name for name, value in dims.items() if value is None]
        if missing and len(missing) < len(dims):
            raise ValueError(f"give all of n_layers, n_kv_heads, head_dim or none (missing: {', '.join(missing)})")
        return self

    @field_validator("revision")
    @classmethod
    def _revision_is_a_commit(cls, value: str | None) -> str | None:
        if value is not None and not COMMIT_SHA.match(value):
            raise ValueError("must be a full 40-character commit sha (branches and tags move)")
        return value

    @property
    def pinned(self) -> bool:
        return self.revision is not None


class ModelPolicy(Strict):
    allow_unpinned: bool = False
    # "stamp": trust size+mtime of a file hashed before; "full": re-hash everything.
    verify: Literal["stamp", "full"] = "stamp"
    delete_unreferenced: bool = False
    # A LAN mirror of the Hugging Face hub (HF_ENDPOINT); None: the hub itself.
    hf_endpoint: str | None = Field(default=None, pattern=r"^https?://")
    # No network at all: only files already present can be verified.
    offline: bool = False


class ModelServer(Strict):
    model: Name
    port: Port
    alias: str = Field(min_length=1)
    enabled: bool = True
    optional: bool = False
    host: str = "127.0.0.1"
    ctx_size: PositiveInt
    threads: PositiveInt
    batch_size: PositiveInt | None = None
    ubatch_size: PositiveInt | None = None
    parallel: PositiveInt = 1
    n_gpu_layers: Annotated[int, Field(ge=0)] = 999
    flash_attn: Literal["on", "off", "auto"] | None = None
    jinja: bool = False
    mmproj: Name | None = None
    extra_args: list[str] = []
    health_timeout: PositiveInt = 120
    # The KV cache in GiB, when the model's dims are not given (or to override them).
    kv_cache_gib: float | None = Field(default=None, gt=0)
    # A file with the key, mode 0600, readable by the service user: a key in
    # the arguments would sit in a world-readable plist or unit.
    api_key_file: AbsPath | None = None
    # The server's environment; written to a world-readable plist or unit.
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = {}

    @field_validator("extra_args")
    @classmethod
    def _extra_args_do_not_repeat_fields(cls, value: list[str]) -> list[str]:
        for arg in value:
            flag = flag_name(arg)
            if flag in SECRET_FLAGS:
                # The flag only: its value is the secret.
                raise ValueError(f"{flag} would put the key in a world-readable plist or unit: use api_key_file")
            if flag in MANAGED_FLAGS:
                raise ValueError(f"{arg!r} is set by the field {MANAGED_FLAGS[flag]!r}: set that instead")
        return value

    @field_validator("env")
    @classmethod
    def _env_holds_no_secret(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if SECRET_NAME.search(key):
                raise ValueError(f"{key!r} looks like a secret; plists and units are world-readable: use api_key_file")
        return value


class Launchd(Strict):
    # daemon: /Library/LaunchDaemons, system domain, runs as UserName; works on
    # a headless Mac reached over SSH. agent: ~/Library/LaunchAgents in
    # gui/<uid>, which only exists while that user is logged in at the GUI.
    kind: Literal["daemon", "agent"] = "daemon"
    # Reverse-DNS, ending in a dot: the server name completes the label.
    label_prefix: str = Field(default="com.kitty.llama-server.", pattern=LABEL_PREFIX)
    # Seconds launchd waits before respawning a server that exited.
    throttle_interval: PositiveInt = 10


class MacOS(Strict):
    # Missing Command Line Tools: install them unattended, or stop and print the commands.
    command_line_tools: Literal["install", "stop"] = "install"
    # pmset settings for the AC power profile; a setting not listed is left as it is.
    pmset: dict[Annotated[str, Field(pattern=r"^[a-z]+$")], Annotated[int, Field(ge=0)]] = {}
    # Metal's wired-memory limit in MiB; None: the whole memory less reserve_gib.
    wired_limit_mb: PositiveInt | None = None
    # GiB kept back from Metal for macOS and the containers.
    reserve_gib: float = Field(default=24, ge=0)
    # GiB allowed per model server for llama.cpp's compute buffers.
    compute_gib: float = Field(default=1.5, ge=0)
    # FileVault on: after a power cut the Mac waits at the unlock screen and no LaunchDaemon
    # starts. "warn" (plan and health table), "refuse" (stop before changing anything), "ignore".
    filevault: Literal["warn", "refuse", "ignore"] = "warn"


ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
EnvName = Annotated[str, Field(pattern=ENV_NAME)]


class StackService(Strict):
    # The port the service publishes on the host (rendered into .env as <SERVICE>_PORT).
    port: Port | None = None
    # "/path": an HTTP GET on the port must answer 2xx; "redis": PING; "postgres":
    # SELECT 1; None: the container must be running (and healthy, if it has a healthcheck).
    health: str | None = Field(default=None, pattern=r"^(/.*|redis|postgres)$")
    # Seconds to wait for it after `docker compose up`.
    health_timeout: PositiveInt = 120

    @model_validator(mode="after")
    def _http_health_needs_a_port(self) -> StackService:
        if self.health and self.health.startswith("/") and self.port is None:
            raise ValueError(f"health {self.health!r} is an HTTP check: give the service's port")
        return self


class Colima(Strict):
    # The VM colima runs the containers in; changing these restarts it.
    cpu: PositiveInt = 4
    memory_gib: PositiveInt = 8
    # The disk can only grow: colima refuses to shrink it.
    disk_gib: PositiveInt = 100
    profile: Name = "default"


class ComposePlugin(Strict):
    # Linux: Debian 12 packages only compose v1. `{arch}` becomes x86_64 or aarch64.
    url: str = "https://github.com/docker/compose/releases/download/v2.40.3/docker-compose-linux-{arch}"
    sha256: SHA256 | None = None


class Stack(Strict):
    enabled: bool = True
    repo_url: str
    # A tag or commit. None: clone the default branch once and never move it
    # (the manual's way); the deploy reports it as unpinned.
    ref: str | None
    compose_file: str = "infra/compose/docker-compose.yml"
    env_file: str = ".env"
    project_name: Name = "kitty"
    # auto: colima on macOS, engine on Linux. colima (macOS, headless, supervised
    # by launchd), docker-desktop / orbstack (macOS, need a GUI login: only
    # checked), engine (Linux: docker.io from apt), external (an engine already
    # answers, e.g. a mounted socket: only the client is installed, and checked).
    runtime: Literal["auto", "colima", "docker-desktop", "orbstack", "engine", "external"] = "auto"
    colima: Colima = Colima()
    compose_plugin: ComposePlugin = ComposePlugin()
    # Seconds to wait for `docker info` once the runtime is started.
    runtime_timeout: PositiveInt = 300
    # How containers reach the model servers: LLAMACPP_<NAME>_HOST=http://<model_host>:<port>.
    model_host: str = Field(default="host.docker.internal", pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    # Added to every service (a compose override file), e.g. host.docker.internal:
    # host-gateway where the runtime does not provide that name (a Linux engine).
    extra_hosts: dict[str, str] = {}
    services: dict[Name, StackService]
    # Non-secret .env values; ports and LLAMACPP_*_HOST are derived, not listed here.
    env: dict[EnvName, str] = {}
    # Names only: values come from the operator's environment or `secrets_file`.
    secrets: list[EnvName] = []
    # On the controller, relative to the directory pyinfra runs in; git-ignored.
    secrets_file: str | None = "secrets.env"

    @field_validator("env")
    @classmethod
    def _env_holds_no_secret(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if SECRET_NAME.search(key):
                raise ValueError(f"{key!r} looks like a secret: list its name in kitty_stack.secrets instead")
            if "'" in item or "\n" in item:
                raise ValueError(f"{key!r}: a .env value cannot hold a single quote or a newline")
        return value

    @model_validator(mode="after")
    def _names_are_set_once(self) -> Stack:
        derived = {f"{service_env_name(name)}_PORT" for name, s in self.services.items() if s.port}
        for name in self.env:
            if name in derived:
                raise ValueError(f"kitty_stack.env.{name}: derived from kitty_stack.services; set the port there")
            if name.startswith("LLAMACPP_") and name.endswith("_HOST"):
                raise ValueError(f"kitty_stack.env.{name}: derived from kitty_servers and kitty_stack.model_host")
            if name in self.secrets:
                raise ValueError(f"kitty_stack.env.{name}: also listed in kitty_stack.secrets")
        return self


def service_env_name(name: str) -> str:
    """`brain` -> `BRAIN`, `images-api` -> `IMAGES_API`: the prefix of a service's .env names."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


class Images(Strict):
    enabled: bool = False
    port: Port = 8089
    # The service's folder in the app checkout; its venv is <path>/.venv.
    path: str = "services/images_service"
    # Relative to `path`; pip installs it again only when its sha256 changes.
    requirements: str = "requirements.txt"
    # The interpreter the venv is made with (`<python> -m venv`).
    python: str = Field(default="python3", min_length=1)
    # The kitty_stack service whose published port holds the RQ queue.
    redis_service: Name = "redis"
    queue: Name = "images"
    # Seconds to wait for `GET /` after a (re)start: the manual's model load takes 2-3 minutes.
    health_timeout: PositiveInt = 300

    @field_validator("path", "requirements")
    @classmethod
    def _inside_the_checkout(cls, value: str) -> str:
        if not value or value.startswith("/") or ".." in value.split("/"):
            raise ValueError("must be a relative path inside the app checkout (no leading /, no ..)")
        return value


class Verify(Strict):
    # The manual's end-to-end check (step 6.2) in the host test suite: POST a query
    # to <query_service>'s /api/query. Off by default: it runs a real model query.
    query: bool = False
    query_service: Name = "brain"
    # Seconds the query may take (a cold model can be slow).
    query_timeout: PositiveInt = 60


class KittyConfig(Strict):
    paths: Paths
    packages: Packages = Packages()
    llamacpp: LlamaCpp
    models: dict[Name, Model]
    model_policy: ModelPolicy = ModelPolicy()
    servers: dict[Name, ModelServer]
    stack: Stack
    images: Images = Images()
    launchd: Launchd = Launchd()
    macos: MacOS = MacOS()
    verify: Verify = Verify()

    @model_validator(mode="after")
    def _query_has_a_service(self) -> KittyConfig:
        if not self.verify.query:
            return self
        name = self.verify.query_service
        service = self.stack.services.get(name)
        if not self.stack.enabled or service is None or service.port is None:
            raise ValueError(
                f"kitty_verify.query: the end-to-end query needs kitty_stack.services.{name} "
                "with a port, and kitty_stack enabled"
            )
        return self

    @model_validator(mode="after")
    def _images_have_redis(self) -> KittyConfig:
        if not self.images.enabled:
            return self
        name = self.images.redis_service
        redis = self.stack.services.get(name)
        if not self.stack.enabled or redis is None or redis.port is None:
            raise ValueError(
                f"kitty_images.enabled: the images service needs the app checkout and its Redis queue: "
                f"kitty_stack enabled, with kitty_stack.services.{name} and its port"
            )
        return self

    @model_validator(mode="after")
    def _servers_fit_models(self) -> KittyConfig:
        for name, server in self.servers.items():
            where = f"kitty_servers.{name}"
            model = self.models.get(server.model)
            if model is None:
                raise ValueError(f"{where}.model: no model named {server.model!r} is defined in kitty_models")
            if model.kind == "mmproj":
                raise ValueError(f"{where}.model: {server.model!r} is an mmproj file, not a model")
            if server.mmproj is not None:
                if model.kind != "vision":
                    raise ValueError(
                        f"{where}.mmproj: model {server.model!r} is not multimodal (kind {model.kind!r}); "
                        "only a vision model takes an mmproj"
                    )
                projector = self.models.get(server.mmproj)
                if projector is None:
                    raise ValueError(f"{where}.mmproj: no model named {server.mmproj!r} is defined in kitty_models")
                if projector.kind != "mmproj":
                    raise ValueError(f"{where}.mmproj: {server.mmproj!r} is of kind {projector.kind!r}, not 'mmproj'")
            elif model.kind == "vision":
                raise ValueError(f"{where}.mmproj: vision model {server.model!r} needs an mmproj file")
        return self

    @model_validator(mode="after")
    def _ports_are_unique(self) -> KittyConfig:
        owners: dict[int, str] = {}
        claims = [(f"kitty_servers.{n}.port", s.port) for n, s in self.servers.items() if s.enabled]
        if self.stack.enabled:
            claims += [(f"kitty_stack.services.{n}.port", s.port) for n, s in self.stack.services.items() if s.port]
        if self.images.enabled:
            claims.append(("kitty_images.port", self.images.port))
        for where, port in claims:
            if port in owners:
                raise ValueError(f"{where}: port {port} is already used by {owners[port]}")
            owners[port] = where
        return self

    def enabled_servers(self) -> dict[str, ModelServer]:
        return {name: server for name, server in self.servers.items() if server.enabled}


# One-off switches for the command line: `pyinfra ... --data verify_models=full`.
SWITCHES = {
    "verify_models": ("model_policy", "verify"),
    "delete_unreferenced_models": ("model_policy", "delete_unreferenced"),
    "allow_unpinned_models": ("model_policy", "allow_unpinned"),
}


def load(data: Mapping[str, Any] | Any) -> KittyConfig:
    """Validate host data (a mapping, or pyinfra's `host.data`)."""
    get = data.get if isinstance(data, Mapping) else (lambda key, default=None: getattr(data, key, default))
    raw = {section: get(key) for key, section in SECTIONS.items() if get(key) is not None}
    for switch, (section, field) in SWITCHES.items():
        if get(switch) is not None:
            raw[section] = {**raw.get(section, {}), field: _switch_value(get(switch))}
    errors = [
        f"{key}: unknown setting (known: {', '.join(SECTIONS)})" for key in _kitty_keys(data) if key not in SECTIONS
    ]
    try:
        config = KittyConfig.model_validate(raw)
    except ValidationError as exc:
        errors += [_describe(error) for error in exc.errors()]
        config = None
    if errors:
        raise ConfigError("invalid KITTY host data:\n" + "\n".join(f"  - {line}" for line in errors))
    return config


def _switch_value(value: Any) -> Any:
    # --data gives strings: "true"/"false" mean booleans here.
    return {"true": True, "false": False}.get(value, value) if isinstance(value, str) else value


def _kitty_keys(data: Mapping[str, Any] | Any) -> list[str]:
    keys = data.keys() if isinstance(data, Mapping) else data.dict().keys()
    return sorted(key for key in keys if key.startswith("kitty_"))


def _describe(error: dict) -> str:
    sections = {section: key for key, section in SECTIONS.items()}
    # pydantic marks a bad dict key with a "[key]" element after it.
    location = [str(part) for part in error["loc"] if part != "[key]"]
    if location and location[0] in sections:
        location[0] = sections[location[0]]
    message = error["msg"].removeprefix("Value error, ")
    if "[key]" in error["loc"]:
        message = f"bad name: {message}"
    if error["type"] == "extra_forbidden":
        message = "unknown setting (a typo?)"
    if not location:
        # Cross-field checks name their field themselves.
        return message
    return f"{'.'.join(location)}: {message}"


def read_group_data(*directories: str | Path) -> dict[str, Any]:
    """The `kitty_*` values of each directory's all.py, later directories winning, as pyinfra merges them.

    For controller-side tools (the host test suite) that need the same data as the deploy.
    """
    merged: dict[str, Any] = {}
    for directory in directories:
        path = Path(directory) / "all.py"
        if path.exists():
            values = runpy.run_path(str(path))
            merged.update({key: value for key, value in values.items() if key.startswith("kitty_")})
    return merged
