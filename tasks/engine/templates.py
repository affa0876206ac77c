"""The templates folder: the one path to it and the one jinja environment that renders it.

Templates are the only files that know plist, unit, .env and newsyslog syntax; the host
scripts there are POSIX sh, uploaded as they are (`path`).
"""

from __future__ import annotations

from pathlib import Path

import jinja2

FOLDER = Path(__file__).resolve().parents[2] / "templates"

ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(FOLDER)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


def path(name: str) -> Path:
    """A template or host script by name (`templates/<name>`)."""
    return FOLDER / name


def render(name: str, **values) -> str:
    """The template rendered with `values` (a function among them is called by the template, as
    the .env's `single_quoted(value)`: the environment stays the same for every render)."""
    return ENVIRONMENT.get_template(name).render(**values)
