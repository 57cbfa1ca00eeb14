"""toolkit.git's one import surface: the table its lazy `__getattr__` reads and the imports mypy reads name the
same things, and each name is the one its module defines."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import toolkit.git


def _typed_imports() -> dict[str, str]:
    """name -> module, as the `if TYPE_CHECKING:` imports of toolkit/git/__init__.py say."""
    tree = ast.parse(Path(toolkit.git.__file__).read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    found: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.module is not None
        for alias in node.names:
            found[alias.asname or alias.name] = node.module.removeprefix("toolkit.git.")
    return found


def test_the_lazy_table_and_the_typed_imports_name_the_same_homes() -> None:
    assert _typed_imports() == toolkit.git._HOMES
    assert toolkit.git.__all__ == sorted(toolkit.git._HOMES)


@pytest.mark.parametrize("name", sorted(toolkit.git._HOMES))
def test_each_exported_name_is_its_modules(name: str) -> None:
    home = importlib.import_module(f"toolkit.git.{toolkit.git._HOMES[name]}")
    assert getattr(toolkit.git, name) is getattr(home, name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'no_such_verb'"):
        toolkit.git.no_such_verb  # noqa: B018


def test_importing_the_package_loads_no_verb_module() -> None:
    code = "import sys, toolkit.git; print(sorted(m for m in sys.modules if m.startswith('toolkit.git.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
