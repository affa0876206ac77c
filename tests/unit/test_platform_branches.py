"""Only tasks/host/platform.py and tasks/supervise/ branch on the OS or the supervisor.

Everyone else asks the platform a question named for what is decided (`plat.compose_standalone`,
`plat.drop_caches_command`, `plat.is_mac` where a Mac-only step is the subject) or asks
tasks/supervise/control.py. This reads every module's syntax tree: `plat.os` or
`plat.supervisor` compared, used as a key, or handed to a call is a branch elsewhere.
Naming either in a message or a report (`f"... on {plat.os}"`) is not.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = ("tasks/host/platform.py", "tasks/supervise/")
WORDS = ("os", "supervisor")


def sources() -> list[Path]:
    found = sorted((ROOT / "tasks").rglob("*.py")) + sorted(ROOT.glob("*.py"))
    return [p for p in found if not str(p.relative_to(ROOT)).startswith(ALLOWED)]


def _platform_word(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr in WORDS
        and isinstance(node.value, ast.Name)
        and (node.value.id in ("plat", "platform", "self"))
    )


def branches(tree: ast.AST) -> list[int]:
    """Lines where the OS or the supervisor decides something."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            used = [node.left, *node.comparators]
        elif isinstance(node, ast.Subscript):
            used = [node.slice]
        elif isinstance(node, ast.Call):
            used = [*node.args, *(k.value for k in node.keywords)]
        elif isinstance(node, ast.Match):
            used = [node.subject]
        else:
            continue
        lines += [node.lineno for value in used if _platform_word(value)]
    return sorted(set(lines))


def test_the_check_sees_each_kind_of_branch():
    code = (
        "a = plat.os == 'macos'\n"
        "b = TABLE[plat.os]\n"
        "c = stop(plat.supervisor, 1)\n"
        "d = fact(os=plat.os)\n"
        "e = f'runs on {plat.os}'\n"
        "g = {'os': plat.os}\n"
    )
    assert branches(ast.parse(code)) == [1, 2, 3, 4]


def test_no_module_outside_platform_and_supervise_branches_on_the_os_or_supervisor():
    found = {}
    for path in sources():
        lines = branches(ast.parse(path.read_text(), str(path)))
        if lines:
            found[str(path.relative_to(ROOT))] = lines
    assert found == {}, "ask tasks/host/platform.py or tasks/supervise/control.py instead"
