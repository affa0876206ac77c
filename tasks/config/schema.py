"""The one description of a KITTY host, validated before any operation is planned.

group_data holds plain values under `kitty_*` names; `load()` turns them into a
`KittyConfig` or raises `ConfigError` naming each bad field and why.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pyinfra.api.exceptions import DeployError

from tasks.config.flags import MANAGED_FLAGS, SECRET_FLAGS, flag_name

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
    "kitty_metrics": "metrics",
    "kitty_logs": "logs",
    "kitty_bench": "bench",
    "kitty_backup": "backup",
    "kitty_rpc_worker": "rpc_worker",
}
# Per-host data read from the whole inventory by tasks/config/placement.py, not by `load()`:
# which servers a host runs (kitty_serves) and the address other hosts reach it at.
PLACEMENT_KEYS = ("kitty_serves", "kitty_address")


def _one_line(value: str) -> str:
    """Every string of the schema: no newline or other control character, anywhere.

    Values reach systemd units, plists, the .env, git and shell commands run as
    root: a newline there starts a new directive or command. Refused here, once,
    for every field; the templates escape for their syntax as a second line of defence.
    """
    bad = sorted({c for c in value if unicodedata.category(c) in ("Cc", "Zl", "Zp")})
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad)
        raise ValueError(f"holds a newline or control character ({shown}): refused in every field")
    return value


# The string type of every field: plain `str` is never used in the schema (tests/unit/test_hardening_schema.py).
Text = Annotated[str, AfterValidator(_one_line)]
Port = Annotated[int, Field(ge=1, le=65535)]
PositiveInt = Annotated[int, Field(gt=0)]
# Absolute, and no surrounding blanks: systemd trims them from unquoted settings.
AbsPath = Annotated[Text, Field(pattern=r"^/(.*\S)?$")]
Name = Annotated[Text, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")]
SHA256 = Annotated[Text, Field(pattern=r"^[0-9a-f]{64}$")]
# A path of an HTTP health check: URL path characters only, never shell syntax.
HttpPath = r"/[A-Za-z0-9._~/%:@=&?+,-]*"
LOOPBACK = re.compile(r"^(127(\.\d{1,3}){3}|::1|localhost)$")


def _ip_or_network(value: str) -> str:
    ipaddress.ip_network(value, strict=False)
    return value


# An address a firewall lets in (tasks/system/firewall.py): an IP address or a network (192.168.1.0/24).
ClientAddress = Annotated[Text, AfterValidator(_ip_or_network)]
# Where git may fetch from: an https, ssh or file URL, or scp-like user@host:path. Never an
# option (a leading `-`), never a transport that runs a command (ext::, fd::).
GIT_URL = re.compile(r"^((https|ssh|file)://[^\s-]\S*|[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9.-]*:\S+)$")


def _git_url(value: str) -> str:
    if not GIT_URL.match(value):
        raise ValueError("must be an https://, ssh:// or file:// URL, or user@host:path (no spaces)")
    return value


def _git_ref(value: str) -> str:
    """A tag, branch or commit as `git check-ref-format` allows it, and never an option."""
    problems = [
        (value.startswith("-"), "starts with '-'"),
        (any(c in value for c in " ~^:?*[\\"), "holds a space or one of ~ ^ : ? * [ \\"),
        (".." in value or "@{" in value or "//" in value, "holds '..', '@{' or '//'"),
        (value == "@" or value.endswith(("/", ".", ".lock")), "is '@' or ends with '/', '.' or '.lock'"),
        (any(part.startswith(".") for part in value.split("/")), "has a part starting with '.'"),
    ]
    for bad, why in problems:
        if bad:
            raise ValueError(f"not a valid git ref: {why}")
    return value


GitUrl = Annotated[Text, AfterValidator(_git_url)]
GitRef = Annotated[Text, Field(min_length=1), AfterValidator(_git_ref)]
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
    brew: list[Text] = []
    apt: list[Text] = []
    # On Linux the Hugging Face CLI lives in a venv of its own (<opt_dir>/hf).
    hf_pip: Text = "huggingface_hub==2.4.0"

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
    git_url: GitUrl
    ref: GitRef
    # auto: Metal on macOS, CPU on Linux.
    backend: Literal["auto", "metal", "cpu", "cuda"] = "auto"
    # The CPU code of the build (every backend has a CPU part): "native" compiles for every
    # instruction this CPU advertises (-march=native: AVX-512 and AMX where listed), "portable"
    # for llama.cpp's baseline (x86-64: AVX2, FMA, F16C, BMI2; never AVX-512 or AMX). A VM can
    # advertise what it does not let run: native then crashes on the first token. auto: native
    # on macOS (Apple Silicon has nothing to hide), portable on Linux (README, "A build that
    # computes").
    cpu: Literal["auto", "native", "portable"] = "auto"
    build_number: int | None = None
    cmake_options: dict[Text, Text] = {}
    targets: list[Text] = ["llama-server"]
    keep_builds: PositiveInt = 3
    # Where ccache keeps compiled objects; None: <opt_dir>/llama.cpp/ccache.
    ccache_dir: AbsPath | None = None
    # How long a new build may take to load the tiny smoke-test model, and then to answer, before it
    # is refused as hanging (tasks/inference/llamacpp.py).
    smoke_timeout: PositiveInt = 120

    @field_validator("cmake_options")
    @classmethod
    def _cpu_is_chosen_by_name(cls, value: dict[str, str]) -> dict[str, str]:
        # One switch, named and validated, rather than two that could disagree.
        if "GGML_NATIVE" in value:
            raise ValueError(
                "GGML_NATIVE is set by kitty_llamacpp.cpu ('native' or 'portable'): remove it from cmake_options"
            )
        return value


class ModelShape(Strict):
    """A model's shape as its GGUF header says it (written into the models lock, tasks/config/gguf.py)."""

    architecture: Text | None = None
    block_count: PositiveInt | None = None
    head_count: PositiveInt | None = None
    head_count_kv: PositiveInt | None = None
    key_length: PositiveInt | None = None
    embedding_length: PositiveInt | None = None
    context_length: PositiveInt | None = None
    split_count: PositiveInt | None = None


class ModelFile(Strict):
    name: Text = Field(min_length=1)
    # Exact bytes when known; `approx_gb` otherwise, used for disk and memory budgets.
    size: PositiveInt | None = None
    approx_gb: float | None = Field(default=None, gt=0)
    sha256: SHA256 | None = None
    # From the models lock (kitty_model_policy.lock_file): not written by hand.
    shape: ModelShape | None = None


class Model(Strict):
    repo: Text = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    # What a human wants: a branch, a tag or a commit sha (None: main). The models
    # lock (lock_models.py) resolves it to `commit`; a commit sha here is its own pin.
    revision: Text | None = Field(default=None, pattern=r"^[^\s]+$")
    # The commit downloaded: from the lock, or the revision when that is a sha. None
    # means "not pinned": downloads are refused unless kitty_model_policy.allow_unpinned is set.
    commit: Text | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")
    dir: Text = Field(pattern=r"^[^/].*$")
    kind: Literal["text", "vision", "mmproj"] = "text"
    files: list[ModelFile] = Field(min_length=1)
    note: Text = ""
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

    @model_validator(mode="before")
    @classmethod
    def _a_commit_sha_pins_itself(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("commit") and COMMIT_SHA.match(str(data.get("revision") or "")):
            return {**data, "commit": data["revision"]}
        return data

    @property
    def pinned(self) -> bool:
        return self.commit is not None

    @property
    def shape(self) -> ModelShape | None:
        """The shape in the lock, from the first file whose header gives the layer count (a split's first shard)."""
        return next((f.shape for f in self.files if f.shape and f.shape.block_count), None)


class ModelPolicy(Strict):
    allow_unpinned: bool = False
    # "stamp": trust size+mtime of a file hashed before; "full": re-hash everything.
    verify: Literal["stamp", "full"] = "stamp"
    delete_unreferenced: bool = False
    # A LAN mirror of the Hugging Face hub (HF_ENDPOINT); None: the hub itself.
    hf_endpoint: Text | None = Field(default=None, pattern=r"^https?://\S+$")
    # No network at all: only files already present can be verified.
    offline: bool = False
    # The models lock (lock_models.py writes it, the deploy reads it), on the controller,
    # relative to the project; None: no lock, only pins written in kitty_models.
    lock_file: Text | None = None
    # "curl": resumable ranged downloads of the resolve URL; "hf": `hf download` (no resume).
    downloader: Literal["curl", "hf"] = "curl"


class ModelServer(Strict):
    model: Name
    port: Port
    alias: Text = Field(min_length=1)
    enabled: bool = True
    optional: bool = False
    # Beyond loopback, only with api_key_file.
    host: Text = Field(default="127.0.0.1", pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    ctx_size: PositiveInt
    threads: PositiveInt
    batch_size: PositiveInt | None = None
    ubatch_size: PositiveInt | None = None
    parallel: PositiveInt = 1
    # One KV cache shared by all slots (--kv-unified): a request may use the whole ctx_size.
    # Off, --parallel N gives each request ctx_size / N tokens.
    kv_unified: bool = False
    n_gpu_layers: Annotated[int, Field(ge=0)] = 999
    flash_attn: Literal["on", "off", "auto"] | None = None
    # How llama-server reads the weights (--load-mode, b11434's names): "none" reads them into
    # its own buffers, "mmap" maps the file, "mlock"/"mmap+mlock" also wire them in RAM (they
    # count as wired memory: tasks/system/memory_budget.py), "dio" is direct I/O (Linux only; buffered
    # reads elsewhere), "auto" is the build's default (mmap). None: the flag is not given.
    # Why the manual's servers use "none": README, Model load speed.
    load_mode: Literal["auto", "none", "mmap", "mlock", "mmap+mlock", "dio"] | None = None
    jinja: bool = False
    mmproj: Name | None = None
    extra_args: list[Text] = []
    health_timeout: PositiveInt = 120
    # The KV cache in GiB, when the model's dims are not given (or to override them).
    kv_cache_gib: float | None = Field(default=None, gt=0)
    # A file with the key, mode 0600, readable by the service user: a key in
    # the arguments would sit in a world-readable plist or unit.
    api_key_file: AbsPath | None = None
    # Beyond loopback a firewall lets in only the hosts whose app uses the server (tasks/system/firewall.py):
    # more addresses or networks here (a LAN's laptops), e.g. ["192.168.1.0/24"].
    allow_from: list[ClientAddress] = []
    # llama-server's Prometheus endpoint (--metrics, GET /metrics); on: a scrape target is written for it.
    metrics: bool = True
    # May run on several inference hosts at once (each lists it in kitty_serves); otherwise
    # exactly one runs it (tasks/config/placement.py).
    replicas: bool = False
    # llama.cpp RPC: inventory host names whose rpc-server (kitty_rpc_worker) holds part of
    # this model; rendered as --rpc <address>:<port>,... (tasks/inference/rpc_workers.py resolves them).
    rpc_workers: list[Annotated[Text, Field(pattern=r"^[^\s,]+$")]] = []
    # The server's environment; written to a world-readable plist or unit.
    env: dict[Annotated[Text, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], Text] = {}

    @field_validator("extra_args")
    @classmethod
    def _extra_args_do_not_repeat_fields(cls, value: list[str]) -> list[str]:
        for arg in value:
            flag = flag_name(arg)
            if flag in SECRET_FLAGS:
                # The flag only: its value is the secret.
                use = "use api_key_file" if flag == "--api-key" else "the deploy downloads the models itself"
                raise ValueError(f"{flag} would put the key in a world-readable plist or unit, and in ps: {use}")
            if flag in MANAGED_FLAGS:
                raise ValueError(f"{arg!r} is set by the field {MANAGED_FLAGS[flag]!r}: set that instead")
        return value

    @property
    def ctx_per_request(self) -> int:
        """The context one request gets: the whole cache when unified, else its slot's share."""
        return self.ctx_size if self.kv_unified else self.ctx_size // self.parallel

    @model_validator(mode="after")
    def _beyond_loopback_needs_a_key(self) -> ModelServer:
        if not LOOPBACK.match(self.host) and self.api_key_file is None:
            raise ValueError(
                f"host {self.host!r} is beyond loopback: give api_key_file, or anyone who reaches it uses the model"
            )
        return self

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
    label_prefix: Text = Field(default="com.kitty.llama-server.", pattern=LABEL_PREFIX)
    # Seconds launchd waits before respawning a server that exited.
    throttle_interval: PositiveInt = 10


class MacOS(Strict):
    # Missing Command Line Tools: install them unattended, or stop and print the commands.
    command_line_tools: Literal["install", "stop"] = "install"
    # pmset settings for the AC power profile; a setting not listed is left as it is.
    pmset: dict[Annotated[Text, Field(pattern=r"^[a-z]+$")], Annotated[int, Field(ge=0)]] = {}
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
EnvName = Annotated[Text, Field(pattern=ENV_NAME)]


class StackService(Strict):
    # The port the service publishes on the host (rendered into .env as <SERVICE>_PORT).
    port: Port | None = None
    # "/path": an HTTP GET on the port must answer 2xx; "redis": PING; "postgres":
    # SELECT 1; None: the container must be running (and healthy, if it has a healthcheck).
    # The path is quoted where it is used, and still only URL path characters.
    health: Text | None = Field(default=None, pattern=rf"^({HttpPath}|redis|postgres)$")
    # Seconds to wait for it after `docker compose up`.
    health_timeout: PositiveInt = 120
    # Answering but degraded (its health answer says so, or names a failing dependency):
    # shown in the health table; fails the converge unless optional.
    optional: bool = False
    # Run the container on the host's network (compose's network_mode: host; its published
    # ports dropped): it reaches servers on the host's loopback, and listens on `port` itself.
    # Linux engines only: on a Mac the engine's "host" is its Linux VM, not the Mac.
    host_network: bool = False

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
    url: Text = Field(
        default="https://github.com/docker/compose/releases/download/v2.40.3/docker-compose-linux-{arch}",
        pattern=r"^(https|file)://\S+$",
    )
    # Per arch (or one for all), checked before the file is installed. Only a file:// URL
    # (the operator's own mirror) may go without: anything downloaded is pinned.
    sha256: SHA256 | dict[Literal["x86_64", "aarch64"], SHA256] | None = {
        # v2.40.3's release assets, as docker/compose publishes their checksums.
        "x86_64": "dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372",
        "aarch64": "d26373b19e89160546d15407516cc59f453030d9bc5b43ba7faf16f7b4980137",
    }

    @model_validator(mode="after")
    def _downloads_are_pinned(self) -> ComposePlugin:
        if self.sha256 is None and not self.url.startswith("file://"):
            raise ValueError(f"sha256 missing: {self.url} is downloaded and installed as root; give its sha256")
        return self

    def sha256_for(self, arch: str) -> str | None:
        return self.sha256.get(arch) if isinstance(self.sha256, dict) else self.sha256


# Runtimes that run the containers in a Linux VM on a Mac.
MACOS_RUNTIMES = ("colima", "docker-desktop", "orbstack")
HOST_NETWORK_ON_A_MAC = (
    "Docker's host network on a Mac is the VM's, not the Mac's: the container would not reach "
    "the Mac's loopback; keep it off (containers reach the Mac as kitty_stack.model_host)"
)


class Stack(Strict):
    enabled: bool = True
    repo_url: GitUrl
    # A tag or commit. None: clone the default branch once and never move it
    # (the manual's way); the deploy reports it as unpinned.
    ref: GitRef | None
    compose_file: Text = "infra/compose/docker-compose.yml"
    env_file: Text = ".env"
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
    model_host: Text = Field(default="host.docker.internal", pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    # Added to every service (a compose override file), e.g. host.docker.internal:
    # host-gateway where the runtime does not provide that name (a Linux engine).
    extra_hosts: dict[Text, Text] = {}
    services: dict[Name, StackService]
    # Non-secret .env values; ports and LLAMACPP_*_HOST are derived, not listed here.
    env: dict[EnvName, Text] = {}
    # Names only: values come from the operator's environment or `secrets_file`.
    secrets: list[EnvName] = []
    # On the controller, relative to the directory pyinfra runs in; git-ignored.
    secrets_file: Text | None = "secrets.env"

    @field_validator("env")
    @classmethod
    def _env_holds_no_secret(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if SECRET_NAME.search(key):
                raise ValueError(f"{key!r} looks like a secret: list its name in kitty_stack.secrets instead")
            if not dotenv_safe(item):
                raise ValueError(f"{key!r}: a .env value cannot hold a single quote, a backslash or a newline")
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

    @model_validator(mode="after")
    def _host_network_only_on_linux(self) -> Stack:
        if self.runtime in MACOS_RUNTIMES:
            for name, service in self.services.items():
                if service.host_network:
                    raise ValueError(f"kitty_stack.services.{name}.host_network: {HOST_NETWORK_ON_A_MAC}")
        return self


def dotenv_safe(value: str) -> bool:
    """Whether compose reads `NAME='value'` back as exactly `value`: its dotenv parser ends a
    single-quoted value at the first quote not preceded by a backslash, across lines."""
    return not any(c in value for c in "'\\") and not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value)


def service_env_name(name: str) -> str:
    """`brain` -> `BRAIN`, `images-api` -> `IMAGES_API`: the prefix of a service's .env names."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


class Images(Strict):
    enabled: bool = False
    port: Port = 8089
    # The service's folder in the app checkout; its venv is <path>/.venv.
    path: Text = "services/images_service"
    # Relative to `path`; pip installs it again only when its sha256 changes.
    requirements: Text = "requirements.txt"
    # The interpreter the venv is made with (`<python> -m venv`).
    python: Text = Field(default="python3", min_length=1)
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


class Metrics(Strict):
    # The Prometheus file_sd target file: one target per enabled server with metrics on,
    # labels server/model/host. Prometheus rereads it by itself. None: the app checkout's
    # observability config, <kitty_root>/infra/prometheus/targets/kitty-llama-servers.json.
    targets_file: AbsPath | None = None
    # The address Prometheus scrapes; None: the server's own listen address (a Prometheus
    # on the host's network). A containerised one: e.g. "host.docker.internal".
    scrape_host: Text | None = Field(default=None, pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    # The `host` label; None: the host's name in the inventory.
    host_label: Text | None = Field(default=None, min_length=1)
    # The account Prometheus runs as on an application host: the only one that can read the
    # copies of the servers' keys it scrapes keyed servers with (tasks/inference/scrape_keys.py).
    # None: the account that owns the app checkout (the service account, else the admin). A
    # containerised Prometheus reading them through a bind mount: the image's user (nobody).
    prometheus_user: Name | None = None
    # Where those copies live (0700, prometheus_user). None: <opt_dir>/prometheus-keys.
    keys_dir: AbsPath | None = None


class Logs(Strict):
    # Every log in kitty_paths.logs_dir, rotated by newsyslog (macOS) or logrotate (Linux)
    # once it is larger than this; `keep` rotated files are kept, compressed.
    max_size_mb: PositiveInt = 100
    keep: PositiveInt = 5


class Bench(Strict):
    # The fixed prompt of the speed measurement, and how many tokens to generate.
    prompt: Text = Field(default="Explain in three sentences why a Mac Studio suits local inference.", min_length=1)
    n_predict: PositiveInt = 64
    # Restart each enabled server (one at a time, each waited for) to time start to healthy.
    restart: bool = False
    # Time each enabled server's model load in every load mode, with a throwaway llama-server
    # (tasks/runbook/bench_load.py): the server itself is stopped meanwhile, then started again.
    load_modes: bool = False
    # The modes it times, each in a throwaway llama-server (llama.cpp b11434's --load-mode values).
    load_modes_measured: list[Literal["auto", "none", "mmap", "mlock", "mmap+mlock", "dio"]] = Field(
        default=["none", "mmap", "mlock", "mmap+mlock", "dio"], min_length=1
    )
    # Where the JSON and CSV go, on the controller.
    report_dir: Text = "reports"


class Backup(Strict):
    """backup.py / restore.py: a restic repository (encrypted) of the stack's data (tasks/runbook/backup.py)."""

    # Where the password file, the restic cache and the staging folder live (0700). None: <opt_dir>/backup.
    folder: AbsPath | None = None
    # A restic repository: a path on the host, or e.g. sftp:admin@laptop:/backups/kitty. None: <folder>/repo.
    repository: Text | None = Field(default=None, pattern=r"^[^\s-]\S*$")
    # The name of the secret holding the restic password: the operator's environment, else
    # kitty_stack.secrets_file (tasks/app/secrets.py). Never in group data. Each host first takes
    # its own, <password_secret>_<HOST> (tasks/runbook/restic.py): one password, one repository per host.
    password_secret: EnvName = "KITTY_BACKUP_PASSWORD"
    # True: hosts whose repository is not on the host itself may share <password_secret>.
    # Whoever holds a repository's password can write snapshots that another host then restores.
    shared_password: bool = False
    # The stack services whose data is backed up: Postgres (pg_dump) and Redis (its RDB).
    postgres_service: Name | None = "postgres"
    redis_service: Name | None = "redis"
    # The stack's S3 store (MinIO): every bucket through the S3 API, with rclone on the host.
    # None, or a name not in kitty_stack.services: no buckets.
    s3_service: Name | None = "minio"
    # Its S3 API as the host reaches it. None: http://127.0.0.1:<the service's published port>.
    s3_endpoint: Text | None = Field(default=None, pattern=r"^https?://[A-Za-z0-9.\[\]:-]+/?$")
    # The secrets holding its access and secret keys: names in kitty_stack.secrets, so the
    # host reads them from the app's .env (0600); never in group data, never on a command line.
    s3_access_key_secret: EnvName = "MINIO_ROOT_USER"
    s3_secret_key_secret: EnvName = "MINIO_ROOT_PASSWORD"
    # rclone's --bwlimit for the bucket copies (e.g. "20M" bytes/s), so a backup leaves the
    # live service its bandwidth. None: unlimited.
    s3_bwlimit: Text | None = Field(default=None, pattern=r"^[0-9]+(\.[0-9]+)?[BKMGTP]?$")
    # `restic forget --prune` after a successful backup only.
    keep_last: PositiveInt = 7
    keep_daily: PositiveInt = 7
    keep_weekly: PositiveInt = 4
    keep_monthly: PositiveInt = 6
    # Seconds to wait for Redis's BGSAVE, and for the stack's health after a restore.
    timeout: PositiveInt = 300


class RpcWorker(Strict):
    """kitty_rpc_worker: this inference host runs one llama.cpp rpc-server (tasks/inference/rpc_workers.py)."""

    port: Port = 50052
    # rpc-server has NO authentication: anyone who reaches the port can allocate this host's
    # memory, run computations on it and read the tensors it holds. Loopback unless allowed.
    allow_beyond_loopback: bool = False
    host: Text = Field(default="127.0.0.1", pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    # rpc-server's --threads (its CPU device); None: its default, half the cores.
    threads: PositiveInt | None = None
    # --cache: large tensors kept on this host's disk (<opt_dir>/rpc-cache), not sent again.
    cache: bool = False
    # --device: which of this host's devices it exposes (e.g. ["Metal"]); []: every accelerator.
    devices: list[Annotated[Text, Field(pattern=r"^[A-Za-z0-9_.-]+$")]] = []
    # Seconds to wait for it to accept connections after a (re)start.
    health_timeout: PositiveInt = 60
    # Beyond loopback a firewall lets in only the hosts whose servers use it (tasks/system/firewall.py),
    # and these addresses or networks.
    allow_from: list[ClientAddress] = []

    @field_validator("host")
    @classmethod
    def _beyond_loopback_only_when_allowed(cls, value: str, info: ValidationInfo) -> str:
        if not LOOPBACK.match(value) and not info.data.get("allow_beyond_loopback"):
            raise ValueError(
                f"{value!r} is beyond loopback, and rpc-server has no authentication: anyone who reaches "
                "the port can use this host's memory and devices and read what they hold. Bind it to a "
                "private address only your hosts reach and set allow_beyond_loopback: true"
            )
        return value


class RpcUse(Strict):
    """One split model as this host sees it (tasks/inference/rpc_workers.py, from the whole inventory)."""

    # `address:port` of each rpc-server, in --rpc order; [] on a host that is only a worker.
    endpoints: list[Text] = []
    # What the workers run (their kitty_rpc_worker and llama.cpp settings): a change restarts the server.
    definition: Text = ""
    # This host's part of the model's weights and KV cache (the memory budget).
    share: float = Field(default=1.0, ge=0, le=1)


class Wire(Strict):
    """How the application host reaches one model server (tasks/config/placement.py)."""

    url: Text
    # The server listens beyond loopback: the app sends its key (LLAMACPP_<NAME>_API_KEY).
    keyed: bool = False


class ScrapeTarget(Strict):
    """One server as an application host's Prometheus scrapes it (tasks/config/placement.py)."""

    server: Name
    # Its `host` label: the host that runs it.
    host: Text
    model: Text
    # HOST:PORT, as the application host reaches it.
    address: Text
    # It answers only with its key: scraped by a job of its own that sends it.
    keyed: bool = False
    # It runs on the application host itself (its address and label are decided there).
    local: bool = False


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
    metrics: Metrics = Metrics()
    logs: Logs = Logs()
    bench: Bench = Bench()
    backup: Backup = Backup()
    # Never from group data (no kitty_* name maps to it): set by tasks/config/placement.py on an
    # application host, from the whole inventory. None: the servers of this config, on this host.
    wiring: dict[Name, Wire] | None = None
    # Also set by tasks/config/placement.py only: enabled servers that other inference hosts run
    # (name -> those hosts); not enabled in this host's view, removed here if installed.
    elsewhere: dict[Name, list[Text]] = {}
    # Also set by tasks/config/placement.py only, on an application host of a placed inventory: every
    # server of every host its Prometheus scrapes. None: this host's own servers.
    scrape: list[ScrapeTarget] | None = None
    rpc_worker: RpcWorker | None = None
    # Never from group data: set by tasks/inference/rpc_workers.py from the whole inventory.
    rpc: dict[Name, RpcUse] = {}

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
    def _backup_reaches_the_s3_store(self) -> KittyConfig:
        backup = self.backup
        service = self.stack.services.get(backup.s3_service or "")
        if not self.stack.enabled or service is None:
            return self
        if backup.s3_endpoint is None and service.port is None:
            raise ValueError(
                f"kitty_backup.s3_endpoint: kitty_stack.services.{backup.s3_service} publishes no port: "
                "give its S3 endpoint"
            )
        for field in ("s3_access_key_secret", "s3_secret_key_secret"):
            name = getattr(backup, field)
            if name not in self.stack.secrets:
                raise ValueError(
                    f"kitty_backup.{field}: {name} is not in kitty_stack.secrets "
                    "(the backup reads the S3 keys from the app's .env)"
                )
        return self

    @model_validator(mode="after")
    def _ports_are_unique(self) -> KittyConfig:
        owners: dict[int, str] = {}
        claims = [(f"kitty_servers.{n}.port", s.port) for n, s in self.servers.items() if s.enabled]
        if self.stack.enabled:
            claims += [(f"kitty_stack.services.{n}.port", s.port) for n, s in self.stack.services.items() if s.port]
        if self.images.enabled:
            claims.append(("kitty_images.port", self.images.port))
        if self.rpc_worker:
            claims.append(("kitty_rpc_worker.port", self.rpc_worker.port))
        for where, port in claims:
            if port in owners:
                raise ValueError(f"{where}: port {port} is already used by {owners[port]}")
            owners[port] = where
        return self

    def enabled_servers(self) -> dict[str, ModelServer]:
        return {name: server for name, server in self.servers.items() if server.enabled}
