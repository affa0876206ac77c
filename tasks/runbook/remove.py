"""Take a host out of KITTY: undo what kitty-ops installed on it; keep its models and the app's data unless asked.

    application stack    `docker compose down` of kitty-ops' own project, found by compose's
                         project label (never a container's name); its volumes stay unless asked
    supervised programs  every program of kitty-ops' families the host has (a plist or unit, or a
                         record of one): images service, model servers, RPC worker, colima; removed
                         as a disabled one is (tasks/supervise: bootout or disable --now, definition
                         and record deleted)
    wired limit          macOS: its boot job, then iogpu.wired_limit_mb back to macOS's default (0)
    log rotation         /etc/newsyslog.d/kitty.conf or /etc/logrotate.d/kitty
    firewall             the nftables table or pf anchor, its file and its boot job (tasks/system/firewall.py)
    builds, keys, records  in opt_dir: llama.cpp (source, builds, `current`), keys, state (the
                         supervisor's records), the hf CLI and its token, the RPC cache, the scripts
    service account      kitty_paths.service_user, when kitty-ops made it (by the marks it gives one)
    models               `--data remove_models=true`: the files kitty_models names, their stamps,
                         the download staging folder
    application data     `--data remove_app_data=true`: the stack's volumes, kitty_root (the app's
                         checkout, its .env, the images venv) and logs_dir

A folder that holds anything kitty-ops did not put there is kept, with only kitty-ops' entries
removed from it, and the run says what it kept and where. The backup folder (kitty_backup) is
never removed: it may hold the only copy. Prerequisites stay (apt or Homebrew packages, the
Docker engine, compose's plugin, power settings): other software may use them. Every step reads
the host first and changes only what is there, so a second run changes nothing.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath

from pyinfra import host, logger
from pyinfra.api import FactBase, deploy, operation
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import files, server

from tasks.app import images
from tasks.config import KittyConfig, data_flag
from tasks.engine import run_record
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.inference import api_keys, rpc_workers, servers
from tasks.runbook import shutdown
from tasks.supervise import Agent, Family, Slot, control
from tasks.supervise import converge as supervise_converge
from tasks.system import firewall, logs, memory_budget, service_account

WHY = "host taken out"
# What kitty-ops keeps in opt_dir, by kind; the backup folder (default <opt_dir>/backup) is not among them.
HF_FOLDER = (
    "hf"  # the hf CLI's venv, its HF_HOME and token files (tasks/system/prerequisites.py, tasks/inference/models.py)
)
STAGING = ".kitty-staging"  # downloads in progress (tasks/inference/models.py)
STAMPS = ".kitty"  # a model folder's stamps of verified files (models.stamp_path)


@dataclass(frozen=True)
class Asked:
    """What to remove beyond what kitty-ops installed."""

    models: bool = False
    app_data: bool = False


def _under(path: str, folder: str) -> bool:
    p, f = PurePosixPath(path), PurePosixPath(folder)
    return p == f or f in p.parents


def options(cfg: KittyConfig, data) -> Asked:
    """`remove_models` / `remove_app_data` from `--data`; refused, naming the field, where they remove too much."""
    asked = Asked(models=data_flag(data, "remove_models"), app_data=data_flag(data, "remove_app_data"))
    problems = []
    if asked.app_data:
        paths = cfg.paths
        for field, folder in (("kitty_root", paths.kitty_root), ("logs_dir", paths.logs_dir)):
            if len(PurePosixPath(folder).parts) < 3:
                problems.append(f"kitty_paths.{field}: {folder} is too near / to remove whole")
            if not asked.models and _under(paths.models_dir, folder):
                problems.append(
                    f"kitty_paths.models_dir ({paths.models_dir}) is inside kitty_paths.{field} ({folder}): "
                    "remove_app_data would remove the models too; add --data remove_models=true, or keep the app data"
                )
            if _under(layout.backup_dir(cfg), folder):
                problems.append(
                    f"the backup folder ({layout.backup_dir(cfg)}) is inside kitty_paths.{field} ({folder}): "
                    "remove.py never removes backups; move it (kitty_backup.folder) first"
                )
    if problems:
        raise DeployError(f"{host.name}: remove.py refuses:\n" + "\n".join(f"  - {p}" for p in problems))
    return asked


# --- What is on the host ---------------------------------------------------------------


class FolderEntries(FactBase[dict]):
    """The names in each folder that exists: {folder: [names]}; a folder that is not there is not a key."""

    default = dict

    def command(self, folders: list[str]) -> str:
        quoted = " ".join(shlex.quote(folder) for folder in folders)
        return (
            f'for d in {quoted}; do [ -d "$d" ] && [ ! -L "$d" ] || continue; '
            'printf "folder %s\\n" "$d"; ls -A "$d" | sed "s/^/entry /"; done; true'
        )

    def process(self, output) -> dict:
        found: dict[str, list[str]] = {}
        current = None
        for line in output:
            kind, _, rest = line.rstrip("\n").partition(" ")
            if kind == "folder":
                current = rest
                found[current] = []
            elif kind == "entry" and current is not None:
                found[current].append(rest)
        return found


class ComposeProject(FactBase[dict]):
    """What the engine has of one compose project, by compose's own project label (never by name):
    {"engine": False} when no Docker engine answers, else its containers, networks and volumes."""

    @staticmethod
    def default() -> dict:
        return {"engine": False, "container": [], "network": [], "volume": []}

    def command(self, project: str) -> str:
        label = shlex.quote(f"label=com.docker.compose.project={project}")
        return (
            "command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 || { echo no-engine; exit 0; }; "
            f"docker ps -a --filter {label} --format 'container {{{{.Names}}}}'; "
            f"docker network ls --filter {label} --format 'network {{{{.Name}}}}'; "
            f"docker volume ls --filter {label} --format 'volume {{{{.Name}}}}'"
        )

    def process(self, output) -> dict:
        found: dict = {"engine": True, "container": [], "network": [], "volume": []}
        for line in output:
            kind, _, name = line.strip().partition(" ")
            if kind == "no-engine":
                return ComposeProject.default()
            if kind in found and name:
                found[kind].append(name)
        return found


class AccountMarks(FactBase[dict]):
    """Whether `account` exists, and whether it carries the marks kitty-ops gives an account it makes
    (tasks/system/service_account.py): macOS its RealName, Linux a system account with opt_dir as home and nologin."""

    @staticmethod
    def default() -> dict:
        return {"exists": False, "user": "", "group": "", "home": "", "shell": ""}

    def command(self, account: str, mac: bool) -> str:
        a = shlex.quote(account)
        if mac:
            # `RealName: X`, or `RealName:` with the value on the next line.
            user, group = (
                f"dscl . -read /{kind}/{a} RealName 2>/dev/null | sed '1s/^RealName:[[:space:]]*//' | tr -d '\\n'"
                for kind in ("Users", "Groups")
            )
            return f'id -u {a} >/dev/null 2>&1 || exit 0; echo exists; echo "user $({user})"; echo "group $({group})"'
        return f"getent passwd {a} | sed 's/^/passwd /' || true"

    def process(self, output) -> dict:
        found = AccountMarks.default()
        for line in output:
            kind, _, rest = line.strip().partition(" ")
            if kind == "exists":
                found["exists"] = True
            elif kind in ("user", "group"):
                found[kind] = rest.strip()
            elif kind == "passwd":
                fields = rest.split(":")
                if len(fields) >= 7:
                    found.update(exists=True, home=fields[5], shell=fields[6])
        return found


# --- The steps ---------------------------------------------------------------------------------


@deploy("Application stack")
def application_stack(cfg: KittyConfig, plat: Platform, asked: Asked) -> None:
    """kitty-ops' compose project down: its containers and network; its volumes too when asked.

    Whatever the inventory's roles say now: a host moved out of the application role still has them."""
    engine = shutdown.docker(cfg, plat)
    base = list(plat.compose_argv)
    # By the project's label alone: no compose file or .env is needed (they may be gone).
    command = " ".join(shlex.quote(arg) for arg in [*base, "-p", cfg.stack.project_name])
    compose_down(
        name=f"docker compose down of project {cfg.stack.project_name}"
        + (" and its volumes" if asked.app_data else " (volumes kept)"),
        command=command,
        project=cfg.stack.project_name,
        volumes=asked.app_data,
        _env=engine.env,
        _sudo=engine.sudo,
    )


@operation()
def compose_down(command: str, project: str, volumes: bool):
    """`compose down` of one project, only when the engine has something of it.

    + command: compose with `-p <project>`
    + project: the compose project's name
    + volumes: its volumes too (`--volumes`)
    """
    found = host.get_fact(ComposeProject, project=project)
    if not found["engine"]:
        host.noop("no Docker engine answers here: no container of kitty-ops' to remove")
        return
    left = found["container"] + found["network"] + (found["volume"] if volumes else [])
    if not left:
        host.noop(f"compose project {project} has no container or network here")
        return
    yield f"{command} down --remove-orphans{' --volumes' if volumes else ''} 2>&1"


def _families(cfg: KittyConfig, plat: Platform) -> list[tuple[Family, str, Agent | None]]:
    """kitty-ops' supervised families, in the manual's stop order: (family, what they are, agent)."""
    found = [
        (images.FAMILY, "images", None),
        (servers.family(cfg), "server", None),
    ]
    agent = servers.launchd_agent(cfg, plat)
    if agent:
        found.append((servers.family(cfg), "server", agent))
    found.append((rpc_workers.FAMILY, "rpc worker", None))
    if plat.is_mac:
        # Its VM stops with it: after the stack's containers, which run in it.
        found.append((Family("colima", layout.COLIMA_LABEL, ""), "colima", None))
    return found


@deploy("Supervised programs")
def supervised_programs(cfg: KittyConfig, plat: Platform) -> None:
    """Each program of kitty-ops' families the host has, stopped and removed as a disabled one is."""
    for family, what, agent in _families(cfg, plat):
        _remove_family(cfg, plat, family, what, agent)


def _remove_family(cfg: KittyConfig, plat: Platform, family: Family, what: str, agent: Agent | None = None) -> None:
    slots = []
    for rest, job in control.installed_jobs(cfg, plat, family, agent):
        who = f"{what} {rest}".strip() if rest else what
        slots.append(Slot(job.label, job.unit, None, name=who, why=WHY, agent=agent))
    if slots:
        supervise_converge(cfg, plat, slots)


@deploy("Wired-memory limit")
def wired_limit(cfg: KittyConfig, plat: Platform) -> None:
    """macOS: the boot job that sets iogpu.wired_limit_mb, then the limit itself back to macOS's default (0).

    Only where kitty-ops' boot job is: a limit someone else set is theirs."""
    family = Family("wired-memory limit at boot", layout.WIRED_LIMIT_LABEL, "")
    if not control.installed(cfg, plat, family):
        return
    _remove_family(cfg, plat, family, "wired-memory limit at boot")
    _, current = memory_budget.memory_facts()
    if current:
        server.sysctl(
            name="Metal wired-memory limit back to macOS's default (iogpu.wired_limit_mb 0)",
            key=memory_budget.WIRED_LIMIT,
            value=0,
            _sudo=plat.sudo,
        )


@deploy("Log rotation")
def log_rotation(cfg: KittyConfig, plat: Platform) -> None:
    files.file(
        name=f"Log rotation entries ({logs.config_path(plat)})",
        path=logs.config_path(plat),
        present=False,
        _sudo=plat.sudo,
    )


@deploy("Firewall")
def firewall_rules(cfg: KittyConfig, plat: Platform) -> None:
    """After the servers: a port beyond loopback is never open without its firewall while a server listens."""
    firewall.remove(cfg, plat)


def opt_entries(cfg: KittyConfig) -> dict[str, str]:
    """kitty-ops' own entries of opt_dir: {name: "directory" | "file"}."""
    opt = cfg.paths.opt_dir.rstrip("/")
    paths = {
        layout.llamacpp_dir(cfg): "directory",  # the source, every build and `current`
        layout.keys_dir(cfg): "directory",
        layout.state_dir(cfg): "directory",  # the supervisor's records, the RPC state
        layout.rpc_cache_dir(cfg): "directory",
        layout.hf_dir(cfg): "directory",
        layout.wait_script(cfg): "file",
        layout.colima_wrapper(cfg): "file",
        layout.prometheus_keys_dir(cfg): "directory",
    }
    return {path[len(opt) + 1 :]: kind for path, kind in paths.items() if path.startswith(opt + "/")}


@deploy("Builds, keys and records")
def builds_keys_records(cfg: KittyConfig, plat: Platform) -> None:
    """opt_dir's entries of kitty-ops' (the folder too, when nothing else is in it); keys kept elsewhere."""
    opt = cfg.paths.opt_dir.rstrip("/")
    entries = host.get_fact(FolderEntries, folders=[opt], _sudo=plat.sudo) or {}
    # The backups are kitty-ops' but never removed (said among what is kept): not "foreign".
    backup = layout.backup_dir(cfg)
    keep = {backup.rpartition("/")[2]} if backup.startswith(f"{opt}/") else set()
    _remove_folder(opt, opt_entries(cfg), entries, plat, what="kitty-ops' folder", keep=keep)
    own = layout.keys_dir(cfg)
    for name, srv in sorted(api_keys.keyed_servers(cfg).items()):
        if not _under(srv.api_key_file, own):
            files.file(
                name=f"API key of server {name} ({srv.api_key_file})",
                path=srv.api_key_file,
                present=False,
                _sudo=plat.sudo,
            )


def _remove_folder(
    folder: str, ours: dict[str, str], entries: dict, plat: Platform, what: str, keep: set[str] = frozenset()
) -> None:
    """`folder` whole when it holds only `ours` ({name: kind}); else only those of `ours` it holds.
    `keep`: names of kitty-ops' that stay (and keep the folder) without being called foreign."""
    if folder not in entries:
        return
    names = entries[folder]
    foreign = sorted(name for name in names if name not in ours and name not in keep)
    if not foreign and not set(names) & set(keep):
        files.directory(name=f"{what} {folder}", path=folder, present=False, _sudo=plat.sudo)
        return
    if foreign:
        _kept(f"{folder}: {', '.join(foreign)} (not kitty-ops')")
    for name in sorted(set(names) & set(ours)):
        remove = files.directory if ours[name] == "directory" else files.file
        remove(name=f"{folder}/{name}", path=f"{folder}/{name}", present=False, _sudo=plat.sudo)


@deploy("Service account")
def account(cfg: KittyConfig, plat: Platform) -> None:
    """kitty_paths.service_user deleted when kitty-ops made it (its marks); an account found in place is kept."""
    name = cfg.paths.service_user
    if not name:
        return
    marks = host.get_fact(AccountMarks, account=name, mac=plat.is_mac, _sudo=plat.sudo) or {}
    if not marks.get("exists"):
        return
    if plat.is_mac:
        if marks["user"] != service_account.REAL_NAME:
            _kept(f"account {name}: not made by kitty-ops (its RealName is {marks['user'] or 'empty'!r})")
            return
        commands = [f"dscl . -delete /Users/{shlex.quote(name)}"]
        if marks["group"] == service_account.REAL_NAME:
            commands.append(f"dscl . -delete /Groups/{shlex.quote(name)}")
        server.shell(name=f"Service account {name} (and its group)", commands=commands, _sudo=plat.sudo)
        return
    if (marks["home"], marks["shell"]) != (cfg.paths.opt_dir, service_account.LINUX_SHELL):
        _kept(f"account {name}: not made by kitty-ops (home {marks['home']}, shell {marks['shell']})")
        return
    # Debian's userdel removes its group of the same name too, when nobody else is in it. Not
    # pyinfra's server.user: its fact reads every account's password hash from /etc/shadow.
    server.shell(name=f"Service account {name}", commands=[f"userdel {shlex.quote(name)}"], _sudo=plat.sudo)


@deploy("Model files")
def models(cfg: KittyConfig, plat: Platform, asked: Asked) -> None:
    """With remove_models: the files kitty_models names, their stamps, the staging folder; else kept."""
    root = cfg.paths.models_dir.rstrip("/")
    if not asked.models:
        _kept(f"model files: {root} (--data remove_models=true removes those of kitty_models)")
        return
    per_folder: dict[str, dict[str, str]] = {}
    for model in cfg.models.values():
        folder = f"{root}/{model.dir}".rstrip("/")
        ours = per_folder.setdefault(folder, {STAMPS: "directory"})
        for file in model.files:
            top, _, rest = file.name.partition("/")
            ours[top] = "directory" if rest else "file"
    entries = host.get_fact(FolderEntries, folders=[root, *per_folder], _sudo=plat.sudo) or {}
    # The models folder goes whole when each model folder in it does.
    whole = {
        PurePosixPath(folder).name: "directory"
        for folder, ours in per_folder.items()
        if PurePosixPath(folder).parent == PurePosixPath(root) and set(entries.get(folder, [])) <= set(ours)
    }
    if root in entries and set(entries[root]) <= {*whole, STAGING}:
        files.directory(name=f"Models folder {root}", path=root, present=False, _sudo=plat.sudo)
        return
    foreign = sorted(set(entries.get(root, [])) - {PurePosixPath(folder).name for folder in per_folder} - {STAGING})
    if foreign:
        _kept(f"{root}: {', '.join(foreign)} (not kitty_models')")
    for folder, ours in per_folder.items():
        _remove_folder(folder, ours, entries, plat, what="Model folder")
    if STAGING in entries.get(root, []):
        files.directory(name=f"Download staging {root}/{STAGING}", path=f"{root}/{STAGING}", present=False,
                        _sudo=plat.sudo)  # fmt: skip


@deploy("Application data")
def application_data(cfg: KittyConfig, plat: Platform, asked: Asked) -> None:
    """With remove_app_data: kitty_root (checkout, .env, images venv) and logs_dir; else kept, as the volumes."""
    paths = cfg.paths
    if not asked.app_data:
        _kept(
            f"application data: {paths.kitty_root} (the app's checkout, its .env, the images venv), "
            f"logs in {paths.logs_dir}, the volumes of compose project {cfg.stack.project_name} "
            "(--data remove_app_data=true removes them)"
        )
    else:
        for field, folder in (("kitty_root", paths.kitty_root), ("logs_dir", paths.logs_dir)):
            if field == "logs_dir" and _under(folder, paths.kitty_root):
                continue
            files.directory(name=f"{field} {folder}", path=folder, present=False, _sudo=plat.sudo)
    # Prometheus's targets and jobs, written by kitty-ops wherever they are, and its copies of the keys.
    for what, path in (("targets", layout.metrics_targets(cfg)), ("jobs", layout.metrics_jobs(cfg))):
        if not (asked.app_data and _under(path, paths.kitty_root)):
            files.file(name=f"Prometheus {what} {path}", path=path, present=False, _sudo=plat.sudo)
    files.directory(
        name=f"Prometheus's copies of the keys {layout.prometheus_keys_dir(cfg)}",
        path=layout.prometheus_keys_dir(cfg),
        present=False,
        _sudo=plat.sudo,
    )


# --- What was kept --------------------------------------------------------------------------

# What each host's run keeps, per pyinfra state (weakly: it goes with its state), so runs never mix.


def _kept(line: str) -> None:
    run_record.kept(host, "remove").setdefault("kept", []).append(line)


@deploy("What was kept")
def report(cfg: KittyConfig, plat: Platform) -> None:
    """What it keeps and where: said when planned (`--dry` too, with or without `-y`), and again once run."""
    lines = _kept_lines(cfg, plat)
    for line in lines:
        host.log(f"will keep: {line}", logger.info)
    kept_table(name="What remove.py kept, and where", lines=lines)


def _kept_lines(cfg: KittyConfig, plat: Platform) -> list[str]:
    lines = list(run_record.kept(host, "remove").get("kept", []))
    lines.append(f"backups: {layout.backup_dir(cfg)}, if any (remove.py never removes backups)")
    tools = (
        "Homebrew and its formulae, the power settings"
        if plat.is_mac
        else "apt packages, the Docker engine, compose's plugin"
    )
    lines.append(f"prerequisites: {tools} (other software may use them)")
    return lines


@operation()
def kept_table(lines: list[str]):
    """Print what was kept and where, once the removal ran.

    + lines: one per thing kept, with where it is
    """
    if host.state.is_executing:
        for line in lines:
            host.log(f"kept: {line}", logger.info)
    host.noop("a report: nothing to change")
    return
    yield
