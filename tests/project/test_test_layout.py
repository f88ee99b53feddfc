"""The tests' own layout (docs/development.md, Tests): tests/<room>/ mirrors fcn's layers, shared
fixtures live in conftest.py and helpers in tests/helpers*.py, and no file under tests/ imports a
test module (a test module imported elsewhere runs its tests' module-level code twice and ties two
rooms together)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOMS = {"config", "core", "data", "models", "training", "inference", "frontends", "project"}


def imported_test_modules(source: str) -> list[str]:
    """Return the modules named test_* (or a package's test_* names) that source imports, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[-1].startswith("test_")]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[-1].startswith("test_"):
                found.append(module)
            elif module == "tests" or module.startswith("tests."):
                found += [f"{module}.{a.name}" for a in node.names if a.name.startswith("test_")]
    return found


def test_the_check_finds_an_import_of_a_test_module():
    assert imported_test_modules("from tests.training.test_training_loop import python_env") == [
        "tests.training.test_training_loop"
    ]
    assert imported_test_modules("def f():\n    from tests.test_models import meta_model\n") == [
        "tests.test_models"
    ]
    assert imported_test_modules("from tests.models import test_caffe") == ["tests.models.test_caffe"]
    assert imported_test_modules("import tests.data.test_toy as toy") == ["tests.data.test_toy"]
    assert imported_test_modules("from tests.helpers import python_env\nimport pytest") == []


def test_no_file_under_tests_imports_a_test_module():
    offenders = {
        str(path.relative_to(TESTS)): names
        for path in sorted(TESTS.rglob("*.py"))
        if (names := imported_test_modules(path.read_text()))
    }
    assert not offenders, f"move what they import into tests/helpers.py or a conftest.py: {offenders}"


def test_every_test_module_sits_in_a_room():
    loose = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert not loose, f"put these in one of tests/{sorted(ROOMS)}/: {loose}"
    rooms = {p.parent.name for p in TESTS.rglob("test_*.py")}
    assert rooms <= ROOMS, f"test folders outside the rooms: {sorted(rooms - ROOMS)}"
    assert all((TESTS / room / "__init__.py").is_file() for room in ROOMS)
