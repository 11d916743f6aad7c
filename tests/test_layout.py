"""The module map of upx_core's docstring is the package: every module in it, in the README's
"Layout" too, imports pointing from the book to the method, no module past 400 lines."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import upx_core

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "upx_core"
BOOK_GROUP = "The book"


def _map() -> str:
    doc = upx_core.__doc__
    start = doc.index("    upx_core/\n")
    block = doc[start:doc.index("\n\n", start)]
    return "\n".join(line[4:] for line in block.splitlines()) + "\n"


def _groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    current = None
    for line in _map().splitlines()[1:]:
        name = re.match(r"\s+(\w+)\.py\s", line)
        if name:
            groups[current].append(name.group(1))
        else:
            current = line.strip()
            groups[current] = []
    return groups


def test_the_map_lists_every_module_once():
    listed = [m for ms in _groups().values() for m in ms]
    files = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert sorted(listed) == files
    assert len(set(listed)) == len(listed)


def test_the_readme_shows_the_same_map():
    readme = (ROOT / "README.md").read_text()
    assert f"```\n{_map()}```" in readme


def _imports(module: str) -> set[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    return {node.module for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module}


def test_no_module_outside_the_book_imports_one_inside_it():
    groups = _groups()
    book = set(groups[BOOK_GROUP])
    for group, modules in groups.items():
        if group == BOOK_GROUP:
            continue
        for m in modules:
            assert not _imports(m) & book, f"{m} imports {_imports(m) & book}"
    assert _imports("config") == set()


def test_no_module_is_longer_than_400_lines():
    for path in PACKAGE.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name
