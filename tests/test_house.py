"""The house stays livable: rooms a newcomer can hold in mind (docs/development.md, "The house").

Imports following the flow are checked by import-linter in ``make lint``; the error tree by
tests/test_error_tree.py. This checks the sizes: no module of ``src/`` over 400 lines, no class
over 30 methods.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "portability"
MAX_MODULE_LINES = 400
MAX_CLASS_METHODS = 30


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_module_is_over_400_lines() -> None:
    lines = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in _modules()}
    too_long = [
        f"{path.relative_to(SRC)}: {count}"
        for path, count in lines.items()
        if count > MAX_MODULE_LINES
    ]
    assert len(lines) > 100  # the walk found the package
    assert too_long == []


def test_no_class_has_over_30_methods() -> None:
    too_many = []
    classes = 0
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                classes += 1
                methods = [
                    item
                    for item in node.body
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                ]
                if len(methods) > MAX_CLASS_METHODS:
                    too_many.append(f"{path.relative_to(SRC)}:{node.name}: {len(methods)}")
    assert classes > 100
    assert too_many == []
