"""The tree keeps its shape: tests mirror the source, and bench/ stands apart from tests/."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_bench_does_not_import_the_tests() -> None:
    for path in sorted((ROOT / "bench").glob("*.py")):
        assert not any(m == "tests" or m.startswith("tests.") for m in imports(path)), path.name


def test_every_source_package_has_a_test_package() -> None:
    for package in sorted(p.parent for p in (ROOT / "service").rglob("__init__.py")):
        if package.name in ("migrations", "versions"):
            continue
        mirror = ROOT / "tests" / package.relative_to(ROOT)
        assert (mirror / "__init__.py").is_file(), f"no tests/{package.relative_to(ROOT)}/"
