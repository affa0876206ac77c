"""Facts of the prerequisites step: the Python distributions installed in a venv."""

from __future__ import annotations

import re
import shlex

from pyinfra.api import FactBase


class DistInfos(FactBase[list]):
    """The `*.dist-info` folders of the Python packages installed in the virtualenv `venv`
    (`huggingface_hub-2.4.0.dist-info`): what pip itself reads to say what is installed,
    read with `ls` instead of starting pip (`pip list` takes one to two seconds)."""

    default = list

    def command(self, venv: str) -> str:
        return f'for d in {shlex.quote(venv)}/lib/python*/site-packages/*.dist-info; do echo "${{d##*/}}"; done'

    def process(self, output) -> list:
        return sorted(line.strip() for line in output if line.strip().endswith(".dist-info"))


def has_pinned_distribution(dist_infos: list[str], requirement: str) -> bool:
    """Whether `requirement`, when it is exactly `name==version`, is installed (by its dist-info folder).

    Anything else (extras, ranges, a URL) is False: pip decides."""
    found = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([A-Za-z0-9.+!_-]+)\s*", requirement)
    if not found:
        return False
    # Distribution names compare normalised (PEP 503); dist-info folders use `_` for any run of `-_.`.
    name = re.sub(r"[-_.]+", "_", found.group(1)).lower()
    return f"{name}-{found.group(2)}.dist-info".lower() in {d.lower() for d in dist_infos}
