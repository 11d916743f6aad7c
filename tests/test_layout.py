"""The module map of upx_core's docstring is the package: every module in it, in the README's
"Layout" too; each folder's import rule; no private name imported across modules; no module past
400 lines; nothing tracked outside the project's top-level folders."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import upx_core

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "upx_core"
FOLDERS = ("method", "evaluation", "book")
# What each folder may not import from upx_core (top-level modules are shared by all).
FORBIDDEN = {"method": {"evaluation", "book"}, "evaluation": {"book"}}


def _map() -> str:
    doc = upx_core.__doc__
    start = doc.index("    upx_core/\n")
    block = doc[start:doc.index("\n\n", start)]
    return "\n".join(line[4:] for line in block.splitlines()) + "\n"


def _listed() -> list[str]:
    """The map's modules as paths relative to upx_core/ (``method/config.py``)."""
    out, folder = [], ""
    for line in _map().splitlines()[1:]:
        sub = re.match(r"  (\w+)/\s", line)
        if sub:
            folder = sub.group(1) + "/"
            continue
        name = re.match(r"(\s+)(\w+\.py)\s", line)
        if name:
            out.append((folder if len(name.group(1)) > 2 else "") + name.group(2))
    return out


def _modules() -> list[str]:
    return sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                  if p.name != "__init__.py" and "__pycache__" not in p.parts)


def test_the_map_lists_every_module_once():
    listed = _listed()
    assert sorted(listed) == _modules()
    assert len(set(listed)) == len(listed)


def test_the_readme_shows_the_same_map():
    readme = (ROOT / "README.md").read_text()
    assert f"```\n{_map()}```" in readme


def _module_name(path: Path) -> str:
    return ".".join(("upx_core", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
        ".__init__")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(absolute module, imported names)`` for every upx_core import in ``path``, relative
    ones resolved, the ones inside functions too."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.startswith("upx_core"):
                out.append((module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("upx_core")]
    return out


def _targets(module: str, names: list[str]) -> set[str]:
    """The modules an import reaches: ``from upx_core.book import claims`` reaches book."""
    return {module} | {f"{module}.{n}" for n in names}


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_folder_import_rule(folder):
    for path in (PACKAGE / folder).glob("*.py"):
        for module, names in _imports(path):
            for target in _targets(module, names):
                parts = target.split(".")
                assert len(parts) < 2 or parts[1] not in FORBIDDEN[folder], (
                    f"{path.relative_to(ROOT)} imports {target}")


def test_nothing_outside_the_book_imports_it():
    for path in PACKAGE.rglob("*.py"):
        if "book" in path.relative_to(PACKAGE).parts:
            continue
        for module, names in _imports(path):
            for target in _targets(module, names):
                assert not target.startswith("upx_core.book"), (
                    f"{path.relative_to(ROOT)} imports {target}")


def test_config_imports_only_the_mode_registry_which_imports_nothing_of_upx():
    """The command line reads both without torch; neither can close an import cycle."""
    assert [module for module, _ in _imports(PACKAGE / "method" / "config.py")] == [
        "upx_core.method.modes"]
    assert _imports(PACKAGE / "method" / "modes.py") == []


def test_no_private_name_is_imported_across_modules():
    for path in PACKAGE.rglob("*.py"):
        for module, names in _imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")
                       and n != "_lazy"]
            assert not private, f"{path.relative_to(ROOT)} imports {private} from {module}"


def test_no_module_is_longer_than_400_lines():
    for path in PACKAGE.rglob("*.py"):
        assert len(path.read_text().splitlines()) <= 400, path.name


@pytest.mark.parametrize("package", ["upx_core", *(f"upx_core.{f}" for f in FOLDERS)])
def test_each_package_re_exports_its_public_names(package):
    module = importlib.import_module(package)
    assert module.__all__, package
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


TOP_LEVEL = {".ci", ".github", ".gitignore", "Makefile", "README.md", "_config.yml", "_toc.yml",
             "benchmarks", "book", "environment.yml", "notebooks", "pyproject.toml", "tests",
             "upx_core"}


def test_the_repository_tracks_only_the_projects_folders_and_no_sample_images():
    # 57a3d86 committed a folder named "--help" (screenshots a tool wrote there); and the
    # ImageNet samples live in the data directory, never in the repository
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    files = tracked.stdout.splitlines()
    assert {f.split("/")[0] for f in files} == TOP_LEVEL
    assert [f for f in files if re.search(r"\.jpe?g$", f, re.IGNORECASE)] == []
