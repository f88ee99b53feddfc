"""The package's rooms (docs/development.md): no import cycle among fcn's modules, counting imports
inside functions and under TYPE_CHECKING, and a short top level. The layer order itself is
import-linter's contract in pyproject.toml, checked here too so that `make run_tests` sees it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """Return the groups of two or more modules that import each other, directly or not (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return groups


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    sys.path.insert(0, str(ROOT))
    try:
        return grimp.build_graph("fcn", exclude_type_checking_imports=False)
    finally:
        sys.path.remove(str(ROOT))


def test_graph_counts_imports_inside_functions(graph):
    # fcn.inference.loading imports fcn.models inside load_model_weights (torchvision on use)
    assert "fcn.models" in graph.find_modules_directly_imported_by("fcn.inference.loading")


def test_no_import_cycle_among_modules(graph):
    assert strongly_connected(graph) == []


def test_cycle_finder_finds_a_cycle():
    g = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        g.add_module(name)
    g.add_import(importer="a.x", imported="a.y")
    g.add_import(importer="a.y", imported="a.x")
    g.add_import(importer="a.y", imported="a.z")
    assert strongly_connected(g) == [["a.x", "a.y"]]


def test_top_level_has_at_most_eight_modules():
    modules = sorted(p.name for p in (ROOT / "fcn").glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= 8, modules


def test_import_linter_contracts_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -r requirements.dev.txt)")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 kept, 0 broken" in result.stdout
