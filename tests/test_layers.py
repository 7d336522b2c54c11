"""Layers import only downward: unit_core <- preprocessing, unit_tracking, unit_distributed <- unit_pipeline <- flows, unit_cli.

Every import statement of every module is read (function-local ones and importlib calls
with a literal name included), so a hidden upward import fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEVEL = {"unit_core": 0, "preprocessing": 1, "unit_tracking": 1, "unit_distributed": 1, "unit_pipeline": 2,
         "flows": 3, "unit_cli": 3}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.split(".")[0] in LEVEL:
            names.add(node.value)  # importlib.import_module("...") and module tables
    return names


def test_no_module_imports_a_layer_above_it():
    upward = []
    for package, level in LEVEL.items():
        for path in sorted((REPO / package).rglob("*.py")):
            for name in imported_modules(path):
                top = name.split(".")[0]
                if top in LEVEL and top != package and LEVEL[top] >= level:
                    upward.append(f"{path.relative_to(REPO)} imports {name}")
    assert not upward, upward


def test_the_check_sees_function_local_imports(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("def f():\n    from unit_cli.main import build_parser\n")
    assert "unit_cli.main" in imported_modules(module)
