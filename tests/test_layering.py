"""The package import rules of the architecture: search imports nothing of ours; mvk_tools only search;
indexer search and mvk_tools; app anything. Checked on the source, so a violation fails here, not in a
user's install."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = {"search", "mvk_tools", "indexer", "app"}
ALLOWED = {"search": {"search"}, "mvk_tools": {"search", "mvk_tools"},
           "indexer": {"search", "mvk_tools", "indexer"}, "app": OURS}


def imported_packages(path: Path) -> set[str]:
    """Our top-level packages that a module imports (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    bad = {str(p.relative_to(REPO)): sorted(imported_packages(p) - ALLOWED[package])
           for p in (REPO / package).rglob("*.py")}
    assert not {k: v for k, v in bad.items() if v}


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import numpy\n\ndef f():\n    from indexer.segment import segment_stream\n    import app.cli\n")
    assert imported_packages(module) == {"indexer", "app"}


QUERY_INTERNALS = {"search.query", "search.scoring"}   # the app's pages query through the service only


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports by name (``from search import query`` counts as ``search.query``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_app_pages_never_reach_around_the_query_service() -> None:
    """Every query of a page goes through ``search.service`` (one paging limit, one validation, one log)."""
    bad = {str(p.relative_to(REPO)): sorted(imported_modules(p) & QUERY_INTERNALS)
           for p in (REPO / "app" / "ui").rglob("*.py")}
    assert not {k: v for k, v in bad.items() if v}


def test_the_page_checker_sees_a_module_imported_from_its_package(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from search import query\n")
    assert "search.query" in imported_modules(module)
