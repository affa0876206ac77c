"""Put a backup back, refusing before it harms (the manual's restore, in an order that keeps the data).

verify      restic check, `restic restore --verify` of the snapshot into the backup folder,
            every part against the manifest (size, sha256, nothing missing or extra):
            a damaged or incomplete snapshot is refused, naming what is wrong; nothing
            else on the host has changed (templates/backup-verify.sh)
safety      a backup of the current state first (tag `safety`): the restore is undoable
restore     writers stopped; Postgres into a clean database; Redis stopped, its RDB
            replaced in its volume (with AOF on, the AOF rebuilt from it: Redis would load
            its AOF and ignore the RDB), started; every bucket of the S3 store synced back
            and compared (rclone check); the .env (0600); the stack up and healthy
            (templates/backup-restore.sh)
table       what was restored, and what the data belongs to
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy, operation
from pyinfra.api.exceptions import DeployError

from tasks.config import KittyConfig
from tasks.engine import run_record
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.runbook import backup, restic, shutdown


def snapshot_id(data) -> str:
    """`--data backup=<snapshot id|latest>`: required, a hex id or `latest`."""
    value = data.get("backup") if hasattr(data, "get") else getattr(data, "backup", None)
    value = str(value or "").strip()
    if value != "latest" and not (8 <= len(value) <= 64 and all(c in "0123456789abcdef" for c in value)):
        raise DeployError("restore.py needs --data backup=<snapshot id|latest> (a restic snapshot id: hex)")
    return value


def work(cfg: KittyConfig) -> str:
    return f"{layout.backup_dir(cfg)}/restore"


def required(cfg: KittyConfig) -> list[str]:
    parts = ["deployed.json"]
    services = cfg.stack.services
    if cfg.backup.postgres_service in services:
        parts.append("postgres.dump")
    if cfg.backup.redis_service in services:
        parts.append("redis.rdb")
    return parts


def writers(cfg: KittyConfig) -> list[str]:
    """Every stack service but the datastores restored under it."""
    stores = {cfg.backup.postgres_service, cfg.backup.redis_service, cfg.backup.s3_service}
    return sorted(name for name in cfg.stack.services if name not in stores)


@deploy("Verify the snapshot")
def verify(cfg: KittyConfig, plat: Platform, snapshot: str) -> None:
    restic.prepare(cfg, plat)
    verified(
        name=f"Verify snapshot {snapshot}: restic check, restore --verify, the manifest",
        env={
            **restic.environment(cfg),
            "SNAPSHOT": snapshot,
            "WORK": work(cfg),
            "REQUIRED": " ".join(required(cfg)),
            "STAGE": backup.script_env(cfg, plat, restic.TAG)["STAGE"],
        },
        sudo=shutdown.docker(cfg, plat).sudo,
    )


@operation(is_idempotent=False)
def verified(env: dict, sudo: bool):
    """The snapshot's parts under WORK/parts, or a refusal naming what is wrong (host otherwise untouched)."""
    outcome = run_record.kept(host, "restore").setdefault("verify", {})
    yield restic.script_step("backup-verify.sh", env, outcome, {"_sudo": sudo} if sudo else {})


@deploy("Restore")
def restore(cfg: KittyConfig, plat: Platform) -> None:
    docker = shutdown.docker(cfg, plat)
    env = backup.script_env(cfg, plat, restic.TAG)
    restored(
        name="Restore Postgres, Redis, the S3 buckets and the .env; start the stack",
        env={
            "PATH": env["PATH"],
            **{k: v for k, v in env.items() if k == "DOCKER_HOST"},
            "WORK": work(cfg),
            "COMPOSE": docker.compose,
            "PG_SERVICE": env["PG_SERVICE"],
            "REDIS_SERVICE": env["REDIS_SERVICE"],
            "WRITERS": " ".join(writers(cfg)),
            "ENV_FILE": env["ENV_FILE"],
            "ENV_OWNER": cfg.paths.service_user or plat.user,
            "TIMEOUT": str(cfg.backup.timeout),
            **backup.s3_env(cfg),
        },
        sudo=docker.sudo,
    )
    table(name="What restore did")


@operation(is_idempotent=False)
def restored(env: dict, sudo: bool):
    outcome = run_record.kept(host, "restore").setdefault("restore", {})
    yield restic.script_step("backup-restore.sh", env, outcome, {"_sudo": sudo} if sudo else {})


@operation(is_idempotent=False)
def table():
    if not host.state.is_executing:
        host.noop("printed once the restore ran")
        return
    mine = run_record.kept(host, "restore")
    safety = run_record.kept(host, "backup").get("safety", {})
    rows = list(mine.get("verify", {}).get("rows", []))
    rows += [(f"safety {what}", result) for what, result in safety.get("rows", []) if what == "snapshot"]
    rows += mine.get("restore", {}).get("rows", [])
    restic.log_table("restore", rows)
    return
    yield
