"""The application checkout: kitty_stack.repo_url at kitty_stack.ref, in kitty_paths.kitty_root.

A pinned ref (tag or commit) is checked out detached and left alone once
there; an unpinned one gets the default branch once and is never moved.
"""

from __future__ import annotations

import shlex
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, operation
from pyinfra.operations import files

from tasks.config import KittyConfig
from tasks.host.platform import Platform


def app(cfg: KittyConfig, plat: Platform):
    """The checkout operation: when it changes, compose rebuilds (tasks/app/stack.py)."""
    root = cfg.paths.kitty_root
    files.directory(name="Application folder", path=root, user=_owner(cfg, plat), recursive=False, _sudo=plat.sudo)
    return checkout(
        name=f"Check out the application at {cfg.stack.ref or 'its default branch (unpinned)'}",
        path=root,
        url=cfg.stack.repo_url,
        ref=cfg.stack.ref,
        **_as_owner(cfg, plat),
    )


def moves(cfg: KittyConfig, plat: Platform) -> bool:
    """Whether this converge moves the app checkout: what runs from it (the images service) restarts.

    The checkout operation's own test, on the same fact read the same way (as its owner),
    so the answer is the operation's `will_change` without being handed the operation.
    """
    if not cfg.stack.enabled:
        return False
    root, ref = cfg.paths.kitty_root, cfg.stack.ref
    state = host.get_fact(GitCheckout, path=root, ref=ref, **_as_owner(cfg, plat))
    return _left_as_is(root, cfg.stack.repo_url, ref, state) is None


def _owner(cfg: KittyConfig, plat: Platform) -> str:
    return cfg.paths.service_user or plat.user


def _as_owner(cfg: KittyConfig, plat: Platform) -> dict:
    """How git runs in the checkout: as its owner, with the platform's PATH."""
    owner = _owner(cfg, plat)
    return {"_env": plat.env, **({"_sudo": True, "_sudo_user": owner} if owner != plat.user else {})}


def _left_as_is(path: str, url: str, ref: str | None, state: dict) -> str | None:
    """Why the checkout stays as it is (the no-op's reason), or None: this converge moves it."""
    if ref is None:
        if state["exists"] and state["head"]:
            return f"{path} is checked out and kitty_stack.ref is not pinned: left as it is"
        return None
    if state["exists"] and state["origin"] == url and state["wanted"] and state["head"] == state["wanted"]:
        return f"{path} is at {ref} ({state['head'][:12]})"
    return None


@operation()
def checkout(path: str, url: str, ref: str | None):
    """The git work tree at `path` checked out at `ref` (detached), from `url`.

    Works in a folder that already has files (the manual keeps .logs inside the
    checkout): init + fetch instead of clone. `ref` None: the default branch,
    checked out once and then left alone.
    """
    state = host.get_fact(GitCheckout, path=path, ref=ref)
    stays = _left_as_is(path, url, ref, state)
    if stays:
        host.noop(stays)
        return
    git = f"git -C {shlex.quote(path)}"
    commands = []
    if not state["exists"]:
        commands += [f"{git} init -q", f"{git} remote add -- origin {shlex.quote(url)}"]
    elif state["origin"] != url:
        commands.append(f"{git} remote set-url -- origin {shlex.quote(url)}")
    if ref is None:
        commands += [
            f"{git} fetch -q origin",
            f"{git} remote set-head origin --auto >/dev/null",
            f'branch=$({git} symbolic-ref --short refs/remotes/origin/HEAD) && {git} checkout -q --track "$branch"',
        ]
        yield from _trusting_local_mirror(url, commands)
        return
    if not state["wanted"] or commands:
        # A commit id is fetched by name too: a tag or branch fetch may not bring it.
        fetch_sha = f" || {git} fetch -q -- origin {shlex.quote(ref)}" if _looks_like_sha(ref) else ""
        commands.append(f"{git} fetch -q --tags --force -- origin{fetch_sha}")
    # `--` would make the ref a path here: the schema refuses a ref that starts with `-`.
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
    # Written by `git config`, which quotes the value itself: no value is printed into the file.
    trust = (
        "cfg=$(mktemp) && trap 'rm -f \"$cfg\"' EXIT && "
        'git config --file "$cfg" include.path "~/.gitconfig" && '
        f'git config --file "$cfg" safe.directory {shlex.quote(path)} && '
        'export GIT_CONFIG_GLOBAL="$cfg"'
    )
    return [" && ".join([trust, *commands])]


def _looks_like_sha(ref: str) -> bool:
    return 7 <= len(ref) <= 40 and all(c in "0123456789abcdef" for c in ref)


class GitCheckout(FactBase[dict]):
    """The app checkout at `path`: {"exists", "head", "wanted", "origin"}.

    `wanted` is `ref` resolved in the local clone (None when the clone does not
    have it yet: it must be fetched).
    """

    def command(self, path: str, ref: str | None) -> str:
        git = f"git -C {shlex.quote(path)}"
        revision = shlex.quote((ref or "HEAD") + "^{commit}")
        wanted = f"echo wanted $({git} rev-parse -q --verify --end-of-options {revision})"
        return (
            f"if [ ! -d {shlex.quote(path + '/.git')} ]; then exit 0; fi; "
            f"echo head $({git} rev-parse -q --verify HEAD); {wanted}; "
            f"echo origin $({git} config --get remote.origin.url)"
        )

    @staticmethod
    def default() -> dict:
        return {"exists": False, "head": None, "wanted": None, "origin": None}

    def process(self, output) -> dict:
        facts: dict[str, Any] = {"exists": True, "head": None, "wanted": None, "origin": None}
        for line in output:
            key, _, value = line.strip().partition(" ")
            if key in facts:
                facts[key] = value.strip() or None
        return facts
