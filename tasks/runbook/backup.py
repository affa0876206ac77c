"""One backup of the stack's state, while it runs, into the restic repository (tasks/runbook/restic.py).

    postgres   `pg_dump -Fc` in the running container (one consistent snapshot), its server version
    redis      BGSAVE, waited for through LASTSAVE, then its RDB; the table says when persistence is
               off, and when AOF is on (restore.py then rebuilds the AOF from the RDB)
    s3-<bucket>.tar   every bucket of the S3 store (MinIO), copied through its S3 API by rclone
               on the host (progress every 5 s), one tar per bucket; keys from the app's .env
    .env       the app's, as it is, read as its owner (stored encrypted; never printed); a link refused
    record     what this data belongs to: the app's commit, the llama.cpp build, group data's pins
    manifest   every part with its size and sha256 (restore checks them before it touches anything)

The parts are staged in a 0700 folder removed on exit, and stored by `restic backup`,
whose snapshot is written last: a backup killed halfway leaves none. `restic forget
--prune` with kitty_backup's keep rules runs only after a snapshot was written.
The work is templates/backup-take.sh, run on the host with its progress shown.
"""

from __future__ import annotations

import json

from pyinfra import host
from pyinfra.api import deploy, operation

from tasks.config import KittyConfig
from tasks.engine import run_record
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.runbook import restic, shutdown


def deployed_record(cfg: KittyConfig) -> str:
    """What group data pins, as JSON: a restore says what the data belongs to. Never a secret."""
    return json.dumps(
        {
            "app_ref": cfg.stack.ref,
            "llamacpp_ref": cfg.llamacpp.ref,
            "models": {name: {"repo": m.repo, "commit": m.commit or m.revision} for name, m in cfg.models.items()},
        },
        sort_keys=True,
    )


def s3_endpoint(cfg: KittyConfig) -> str:
    """The S3 store's API as the host reaches it; "" when there is none to back up."""
    backup = cfg.backup
    service = cfg.stack.services.get(backup.s3_service or "")
    if service is None:
        return ""
    # config.py checks that one of the two is set.
    return backup.s3_endpoint or f"http://127.0.0.1:{service.port}"


def s3_env(cfg: KittyConfig) -> dict[str, str]:
    """The scripts' S3 settings: where, and the NAMES of the .env values holding the keys."""
    endpoint = s3_endpoint(cfg)
    backup = cfg.backup
    return {
        "S3_SERVICE": (backup.s3_service or "") if endpoint else "",
        "S3_ENDPOINT": endpoint,
        "S3_ACCESS_KEY_SECRET": backup.s3_access_key_secret,
        "S3_SECRET_KEY_SECRET": backup.s3_secret_key_secret,
        "S3_BWLIMIT": backup.s3_bwlimit or "",
    }


def script_env(cfg: KittyConfig, plat: Platform, tag: str) -> dict[str, str]:
    docker = shutdown.docker(cfg, plat)
    backup = cfg.backup
    services = cfg.stack.services
    return {
        **restic.environment(cfg),
        "PATH": docker.env.get("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
        **{k: v for k, v in docker.env.items() if k == "DOCKER_HOST"},
        "STAGE": f"{layout.backup_dir(cfg)}/staging",
        "COMPOSE": docker.compose,
        "PG_SERVICE": backup.postgres_service if backup.postgres_service in services else "",
        "REDIS_SERVICE": backup.redis_service if backup.redis_service in services else "",
        "ENV_FILE": layout.env_file(cfg),
        # The .env is read as its owner, never as root (templates/backup-s3-client.sh).
        "ENV_OWNER": cfg.paths.service_user or plat.user,
        "KITTY_ROOT": cfg.paths.kitty_root,
        "LLAMA_ROOT": layout.llamacpp_dir(cfg),
        "DEPLOYED": deployed_record(cfg),
        "TAG": tag,
        "SAFETY": "1" if "safety" in tag else "0",
        "TIMEOUT": str(backup.timeout),
        "KEEP": restic.keep_flags(cfg),
        **s3_env(cfg),
    }


@deploy("Backup")
def take(cfg: KittyConfig, plat: Platform, *, safety: bool = False) -> None:
    if not safety:
        # A safety backup runs inside restore.py, which prepared them before its verification.
        restic.prepare(cfg, plat)
    tag = restic.SAFETY_TAG if safety else restic.BACKUP_TAG
    snapshot(
        name="Safety backup of the current state" if safety else "Backup into the restic repository",
        env=script_env(cfg, plat, tag),
        key="safety" if safety else "backup",
        sudo=shutdown.docker(cfg, plat).sudo,
    )


@operation(is_idempotent=False)
def snapshot(env: dict, key: str, sudo: bool):
    """One restic snapshot of the stack's parts (templates/backup-take.sh); fails naming the step that failed.

    + env: the script's settings (script_env): paths and names, nothing secret
    + key: "backup" or "safety", where its table rows are kept
    + sudo: as the engine needs (runtime.Engine.sudo)
    """
    outcome = run_record.kept(host, "backup").setdefault(key, {})
    yield restic.script_step("backup-take.sh", env, outcome, {"_sudo": sudo} if sudo else {})


@deploy("What backup did")
def report() -> None:
    table(name="What backup did")


@operation(is_idempotent=False)
def table():
    if not host.state.is_executing:
        host.noop("printed once the backup ran")
        return
    outcome = run_record.kept(host, "backup").get("backup", {})
    restic.log_table("backup", outcome.get("rows", []) or [("backup", "did not run")])
    return
    yield
