"""The Grafana dashboard: the committed JSON is what deploy/grafana/dashboard.py generates, and every panel query
is valid PromQL that reads only metrics the services define, recording rules, or `up`."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from devtools.samples import REPO_ROOT
from tests.helpers.prometheus_rules import metric_names_in, run_promtool, unknown_metrics

pytestmark = pytest.mark.unit

GENERATOR = REPO_ROOT / "deploy" / "grafana" / "dashboard.py"
COMMITTED = REPO_ROOT / "deploy" / "grafana" / "wa-archive.json"


@pytest.fixture(scope="module")
def dashboard() -> ModuleType:
    """deploy/grafana/dashboard.py, loaded as a module (deploy/ is not a package)."""
    spec = importlib.util.spec_from_file_location("wa_archive_dashboard", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def queries(dashboard: ModuleType) -> list[str]:
    found: list[str] = dashboard.panel_queries()
    return found


def test_committed_json_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, (
        f"{result.stderr.strip()}\n(the generator is the source; regenerate and commit wa-archive.json)"
    )


def test_panel_queries_are_every_target_of_the_committed_json(queries: list[str]) -> None:
    model = json.loads(COMMITTED.read_text(encoding="utf-8"))
    targets = [target["expr"] for panel in model["panels"] for target in panel.get("targets", [])]
    assert queries == targets
    assert len(queries) >= 11


def test_the_catalogued_questions_have_panels() -> None:
    model = json.loads(COMMITTED.read_text(encoding="utf-8"))
    exprs = " ".join(target["expr"] for panel in model["panels"] for target in panel.get("targets", []))
    used = metric_names_in(exprs)
    for name in (
        "wa_archive:staleness_seconds",
        "wa_archiver_lag_seconds",
        "wa_archiver_lag_records",
        "wa_archiver_events_archived_total",
        "wa_ingest_requests_total",
        "wa_ingest_produce_seconds_bucket",
        "wa_archiver_dead_letters_total",
        "wa_archiver_media_failures_total",
        "wa_retention_last_run_success_timestamp_seconds",
        "wa_retention_erasure_requests_pending",
        "wa_retention_oldest_pending_erasure_age_seconds",
        "wa_retention_erasure_nearest_deadline_seconds",
        "wa_retention_legal_holds_active",
    ):
        assert name in used, f"no panel reads {name}"


def test_panel_queries_read_only_defined_metrics(queries: list[str]) -> None:
    assert unknown_metrics(queries) == {}


def test_panel_queries_parse(queries: list[str], tmp_path: Path) -> None:
    """promtool parses PromQL only inside rule files, so each query becomes a recording rule of a scratch file."""
    scratch = tmp_path / "dashboard_queries.yml"
    rules = [{"record": f"dashboard:query_{number}", "expr": expr} for number, expr in enumerate(queries)]
    scratch.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = run_promtool("check", "rules", "--lint=none", str(scratch))
    assert result.returncode == 0, f"a panel query is not valid PromQL:\n{result.stdout}\n{result.stderr}"
