"""The application's .env: plain values from group_data, secrets from the operator.

Rendered from templates/kitty.env.j2 and written with operations.secret_file
(mode 0600, compared by sha256): no value of it reaches pyinfra's output, even
with -vvv --diff. Each secret named in kitty_stack.secrets comes from the
operator's environment (same name), else from kitty_stack.secrets_file on the
controller (`NAME=value` lines, git-ignored).
"""

from __future__ import annotations

import os
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api.exceptions import DeployError

from tasks.config import KittyConfig, Stack, dotenv_safe, service_env_name
from tasks.engine import operations, templates
from tasks.host import layout
from tasks.host.platform import Platform
from tasks.inference import api_keys

ENV_TEMPLATE = "kitty.env.j2"


def env_file(cfg: KittyConfig, plat: Platform):
    """The .env operation; missing secrets are left out, their names logged."""
    secrets = secret_values(cfg.stack)
    # The model servers' API keys (tasks/inference/api_keys.py): the app sends them as Bearer tokens.
    secrets.update(api_keys.env_secrets(cfg))
    missing = [name for name in cfg.stack.secrets if name not in secrets]
    if missing:
        logger.warning(f"{host.name}: no value for {', '.join(missing)} (kitty_stack.secrets): left out of the .env")
    owner = cfg.paths.service_user or plat.user
    # As the owner of the folder it goes in, never as root: a link planted there
    # reaches only what that user could write anyway (operations.secret_file).
    as_owner = {"_sudo": True, "_sudo_user": owner} if owner != plat.user else {}
    return operations.secret_file(
        name=f"Write {cfg.stack.env_file} (mode 0600, contents never shown)",
        content=render_env(cfg, secrets),
        dest=layout.env_file(cfg),
        user=owner,
        **as_owner,
    )


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
            if not dotenv_safe(value):
                # The name only: the value is the secret.
                raise DeployError(
                    f"secret {name}: a .env value cannot hold a single quote, a backslash, "
                    "a newline or another control character"
                )
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
    for name, url in model_urls(cfg).items():
        values[f"LLAMACPP_{service_env_name(name)}_HOST"] = url
    return values


def model_urls(cfg: KittyConfig) -> dict[str, str]:
    """Each model server's URL for the app: from the placement over the whole inventory
    (tasks/config/placement.py), else this host's own enabled servers behind model_host."""
    if cfg.wiring is not None:
        return {name: wire.url for name, wire in cfg.wiring.items()}
    return {name: f"http://{cfg.stack.model_host}:{srv.port}" for name, srv in cfg.enabled_servers().items()}


def render_env(cfg: KittyConfig, secrets: dict[str, str]) -> str:
    return templates.render(ENV_TEMPLATE, single_quoted=single_quoted, values=env_values(cfg), secrets=secrets)


def single_quoted(value: str) -> str:
    """`'value'` as compose's dotenv parser reads it back, exactly; anything it would not is refused.

    The schema and secret_values refuse such values first: this is the template's own
    line of defence, and names no value (it may be a secret).
    """
    if not dotenv_safe(value):
        raise ValueError("a .env value holds a quote, a backslash or a control character")
    return f"'{value}'"
