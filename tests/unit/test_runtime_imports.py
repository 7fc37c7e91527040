"""The services import with runtime dependencies only: the image has no development packages."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

DEV_ONLY = ["mypy_boto3_s3", "hypothesis", "pytest", "grafana_foundation_sdk", "jsonschema", "kubernetes_validate"]
ENTRY_POINTS = [
    "services.ingest.__main__",
    "services.archiver.__main__",
    "services.retention.__main__",
    "services.relay.__main__",
    "services.cli",
    "services.archiver.rebuild",
    "services.tools.replay",
    "services.tools.loadgen",
]


def test_entry_points_import_without_development_packages() -> None:
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in DEV_ONLY)
    imports = "; ".join(f"importlib.import_module({module!r})" for module in ENTRY_POINTS)
    done = subprocess.run(
        [sys.executable, "-c", f"import importlib, sys; {blocked}; {imports}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_the_archiver_loads_none_of_the_unused_extras() -> None:
    """Its floor of resident memory: httpx, uvicorn and structlog load without their CLI and dev extras."""
    script = (
        "import sys, services.archiver.__main__, httpx, uvicorn, structlog; "
        "from services.core.runtime import UNUSED_EXTRAS; "
        "print(sorted(name for name in UNUSED_EXTRAS if sys.modules.get(name) is not None))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
