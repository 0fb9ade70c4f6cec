"""Packaging: a plain `pip install .` brings everything the installed package imports.

CI installs the dev extras, which would hide a missing dependency; these tests read the
sources instead (every import, lazy ones inside functions included). `.ci/smoke-install.sh`
proves the same with a real install.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SOURCE_DIRS = {"daemon": "tunewatch.daemon", "plugins": "tunewatch.plugins"}


def canonical(name: str) -> str:
    """A distribution's name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.split(r"[\s<>=!~\[;(@]", requirement, maxsplit=1)[0])


def imported_modules(path: Path, *, guarded: bool = False) -> Iterator[tuple[str, int]]:
    """The top-level name of each absolute import in `path`, with its line; with `guarded`,
    only the imports inside a `try` whose handler catches ImportError (optional ones)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    optional = {id(n) for t in ast.walk(tree) if _catches_import_error(t) for n in ast.walk(t)}
    for node in ast.walk(tree):
        if (id(node) in optional) != guarded:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


def _catches_import_error(node: ast.AST) -> bool:
    if not isinstance(node, ast.Try):
        return False
    names = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def third_party_imports(*, guarded: bool = False) -> dict[str, list[str]]:
    """Each third-party module imported by the installed package -> where ("file:line")."""
    found: dict[str, list[str]] = {}
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for module, line in imported_modules(path, guarded=guarded):
                if module in sys.stdlib_module_names or module in {"tunewatch", "__future__"}:
                    continue
                found.setdefault(module, []).append(f"{path.relative_to(ROOT)}:{line}")
    return found


def test_every_module_the_package_imports_is_a_core_dependency() -> None:
    core = {requirement_name(r) for r in PROJECT["project"]["dependencies"]}
    distributions = packages_distributions()
    undeclared = {
        module: where
        for module, where in third_party_imports().items()
        if not {canonical(d) for d in distributions.get(module, [module])} & core
    }
    assert undeclared == {}, "add these to [project] dependencies in pyproject.toml"


def test_an_optional_import_is_guarded_and_declared_in_an_extra() -> None:
    """A module imported only inside `try: ... except ImportError` (peft) is an extra: the code
    works without it and says how to install it."""
    declared = {
        requirement_name(r)
        for extra in PROJECT["project"]["optional-dependencies"].values()
        for r in extra
    } | {requirement_name(r) for r in PROJECT["project"]["dependencies"]}
    distributions = packages_distributions()
    undeclared = {
        module: where
        for module, where in third_party_imports(guarded=True).items()
        if not {canonical(d) for d in distributions.get(module, [module])} & declared
    }
    assert undeclared == {}, "declare these in [project.optional-dependencies]"
    assert "peft" in third_party_imports(guarded=True)


def test_every_package_folder_is_installed() -> None:
    listed = set(PROJECT["tool"]["setuptools"]["packages"])
    folders = {
        ".".join([SOURCE_DIRS[folder], *init.parent.relative_to(ROOT / folder).parts])
        for folder in SOURCE_DIRS
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert folders - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
