"""One read of each fact per run, over the host's fact shell; installed once per run by tasks.host.entry."""

from __future__ import annotations

import copy

from tasks.engine import fact_shell

# --- One read of each fact per converge ---------------------------------------------------
#
# pyinfra 3.10 keeps no fact cache: every `host.get_fact` is one more SSH round trip. Our
# steps read facts while planning (restart decisions, model stamps, `will_change`) and the
# operation reads them again when it runs; facts that several steps need (the llama.cpp
# builds, the upstream ref, the model files' stamps) were read up to three times. That was
# a third of a no-op converge's round trips (93, 59 of them different, on the sandbox).
# Here a host keeps what its facts answered while nothing has been run on it:
#   - while operations are planned nothing runs, so an answer is stored and reused;
#   - at execution, a stored answer is reused until the first command, upload or rsync of an
#     operation runs on that host; then all its answers are dropped and are read again.
# (No step polls a fact: a health wait is a shell loop on the host, templates/wait-healthy.sh.
# A fact read in a loop with nothing run in between would see its first answer each time.)
# So a planned no-op executes against exactly the state it was planned from, and an
# operation that follows a change reads the changed host, as before. The key is the fact,
# its arguments and how it runs (sudo, user, env, shell): the same fact as another user is
# another read.
# A fact that is read goes over the host's fact shell (tasks/engine/fact_shell.py): one SSH
# session for all of them instead of one each.

_CACHE_ATTR = "_kitty_fact_cache"
_IN_FACT_ATTR = "_kitty_in_fact"


def install_fact_cache() -> bool:
    """Make pyinfra remember facts as described above. Idempotent; False where pyinfra's
    internals are not the ones this was written against (then nothing changes: no cache)."""
    try:
        from pyinfra.api import facts as api_facts
        from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS
        from pyinfra.api.host import Host
    except ImportError:
        return False
    original = getattr(api_facts, "_get_fact", None)
    if original is None or not hasattr(api_facts, "_handle_fact_kwargs"):
        return False
    if getattr(original, "_kitty_cached", False):
        return True

    def cached_get_fact(state, host, cls, args=None, kwargs=None, ensure_hosts=None, apply_failed_hosts=True):
        fact_kwargs, global_kwargs = api_facts._handle_fact_kwargs(state, host, cls, args, kwargs)
        how = {key: value for key, value in global_kwargs.items() if key in CONNECTOR_ARGUMENT_KEYS}
        # (getcallargs puts the fact instance itself among the arguments: not part of the key.)
        what = sorted((name, value) for name, value in fact_kwargs.items() if name != "self")
        key = (cls, repr(what), repr(sorted(how.items())))
        cache = host.__dict__.setdefault(_CACHE_ATTR, {})
        if key in cache:
            # A copy: some operations edit the fact they are given (pyinfra's package ensurers).
            return copy.deepcopy(cache[key])
        host.__dict__[_IN_FACT_ATTR] = host.__dict__.get(_IN_FACT_ATTR, 0) + 1
        try:
            value = original(state, host, cls, args, kwargs, ensure_hosts, apply_failed_hosts)
        finally:
            host.__dict__[_IN_FACT_ATTR] -= 1
        cache[key] = copy.deepcopy(value)
        return value

    cached_get_fact._kitty_cached = True  # type: ignore[attr-defined]
    api_facts._get_fact = cached_get_fact

    def forgetting(method):
        def run(self, *args, **kwargs):
            # A fact's own command leaves the host as it was; anything else may change it.
            if not self.__dict__.get(_IN_FACT_ATTR):
                self.__dict__.pop(_CACHE_ATTR, None)
            return method(self, *args, **kwargs)

        return run

    for name in ("run_shell_command", "put_file", "rsync"):
        setattr(Host, name, forgetting(getattr(Host, name)))

    run_in_session = Host.run_shell_command

    def run_shell_command(self, command, *args, **kwargs):
        # A fact's command goes to the host's fact shell (one SSH session for all of them).
        if self.__dict__.get(_IN_FACT_ATTR):
            answered = fact_shell.run_fact_command(self, command, *args, **kwargs)
            if answered is not None:
                return answered
        return run_in_session(self, command, *args, **kwargs)

    Host.run_shell_command = run_shell_command
    return True
