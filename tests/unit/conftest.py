"""Every test under tests/unit is a unit test: `make test-unit` (``pytest -m unit``) runs them all, also those of a
file that forgot its ``pytestmark`` (three did, and were skipped by it)."""

from __future__ import annotations

from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if UNIT_DIR in item.path.parents:
            item.add_marker(pytest.mark.unit)
