"""How the tests are laid out: no module imports a test module, and only the tests import the tests.

A test module that imports another (for its fixture, a constant, a builder) runs the other's module-level code,
collects its fixtures under a second name and breaks when the other is renamed or split. What several modules
share lives in tests/helpers/ or in a conftest.py; what the benchmarks and ``make run`` share with the tests lives
in devtools/. The imports of every module are read with ``ast``: nothing is imported or run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.samples import REPO_ROOT

pytestmark = pytest.mark.unit


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> Iterator[str]:
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    return imports_in(path.read_text(), package)


def imports_in(source: str, package: str) -> Iterator[str]:
    """Every module ``source`` imports, relative imports resolved against ``package`` (``from a import b`` yields
    ``a`` and ``a.b``: ``b`` may be a module)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)


def is_test_module(name: str) -> bool:
    """``name`` is a test module or something in one."""
    first, *rest = name.split(".")
    return first == "tests" and any(part.startswith("test_") for part in rest)


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (REPO_ROOT / folder).rglob("*.py"))


def test_no_module_imports_a_test_module() -> None:
    found = [
        f"{path.relative_to(REPO_ROOT)} imports {name}"
        for path in python_files("tests", "devtools", "bench", "services", "deploy")
        for name in imports_of(path)
        if is_test_module(name)
    ]
    assert found == []


@pytest.mark.parametrize("folder", ["services", "devtools", "bench", "deploy"])
def test_only_the_tests_import_the_tests(folder: str) -> None:
    found = [
        f"{path.relative_to(REPO_ROOT)} imports {name}"
        for path in python_files(folder)
        for name in imports_of(path)
        if name.split(".")[0] == "tests"
    ]
    assert found == []


def test_the_scan_sees_every_way_of_importing_a_test_module() -> None:
    """The reader itself, on the forms the old layout used and the ones it could have."""
    source = (
        "from tests.integration.test_actions import stack\n"
        "from tests.unit import test_sealing\n"
        "import tests.integration.test_retention\n"
        "from .test_groups import Group\n"
        "from tests.helpers.support import run_cli\n"
    )
    assert [name for name in imports_in(source, "tests.integration") if is_test_module(name)] == [
        "tests.integration.test_actions",
        "tests.integration.test_actions.stack",
        "tests.unit.test_sealing",
        "tests.integration.test_retention",
        "tests.integration.test_groups",
        "tests.integration.test_groups.Group",
    ]
