"""The configuration: group_data and the models lock, validated into one KittyConfig.

    schema        the pydantic model (every `kitty_*` section) and its validators
    flags         which llama-server flags the schema's fields own, which carry secrets
    load          host data (+ `--data` switches, + the lock) to one KittyConfig; the entry
                  scripts' own yes/no and choice switches, parsed one way
    placement     servers and the app placed over the whole inventory (derived)
    host_config   this host's KittyConfig inside a deploy
    model_lock, hub, gguf    the lock file, the Hub's answers, GGUF headers

Plain values in, plain values out: nothing here runs on a host. The names most callers need
are here: `config.load(data)`, `config.KittyConfig`, `config.ConfigError`.
"""

from tasks.config.load import SWITCHES, data_choices, data_flag, load, read_group_data
from tasks.config.schema import *  # noqa: F403 - the schema's models, for `config.<Model>`
from tasks.config.schema import ConfigError, KittyConfig

__all__ = ["SWITCHES", "ConfigError", "KittyConfig", "data_choices", "data_flag", "load", "read_group_data"]
