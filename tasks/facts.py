"""Our own pyinfra facts, for state pyinfra has no fact for."""

from __future__ import annotations

from pyinfra.api import FactBase


class CurrentUser(FactBase[str]):
    """The login name the deploy runs as (`$USER` is unset in many non-login sessions)."""

    def command(self) -> str:
        return "id -un"

    def process(self, output) -> str:
        return "".join(output).strip()
