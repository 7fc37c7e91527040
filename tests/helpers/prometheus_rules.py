"""The alerting rules and what they read: promtool, the rules file, the metric names the services expose and
the names a PromQL expression selects."""

from __future__ import annotations

import importlib
import inspect
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from devtools.samples import REPO_ROOT

RULES = REPO_ROOT / "deploy" / "prometheus" / "rules.yml"


RULES_TEST = REPO_ROOT / "deploy" / "prometheus" / "tests" / "rules_test.yml"


OPERATIONS = REPO_ROOT / "docs" / "OPERATIONS.md"


RUNBOOK_PREFIX = "docs/OPERATIONS.md#"


# Names every Prometheus has besides the services' own metrics.
BUILTIN_METRICS = frozenset({"up"})


_PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"atan2", "inf", "nan"}
)


def promtool() -> str:
    """The promtool binary, or a test failure that says how to get it."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not on PATH: run make stack-up (installs prometheus)", pytrace=False)
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=100, check=False)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def alert_rules() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def alert_names() -> list[str]:
    return sorted({rule["alert"] for rule in alert_rules()})


def recording_rule_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def exposed_metric_names() -> set[str]:
    """Every sample name the three services expose, from their metrics.py (counters as `_total`, histograms as
    `_bucket`/`_sum`/`_count`), found by instantiating each `*Metrics` class on an empty registry."""
    names: set[str] = set()
    for path in sorted((REPO_ROOT / "services").glob("*/metrics.py")):
        module = importlib.import_module(f"services.{path.parent.name}.metrics")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not cls.__name__.endswith("Metrics"):
                continue
            registry = CollectorRegistry()
            metrics_class: Any = cls  # each takes the registry its metrics register on
            metrics_class(registry)
            for family in registry.collect():
                suffixes = {
                    "counter": ("_total", "_created"),
                    "histogram": ("_bucket", "_sum", "_count", "_created"),
                    "summary": ("", "_sum", "_count", "_created"),
                }.get(family.type, ("",))
                names.update(family.name + suffix for suffix in suffixes)
    return names


def metric_names_in(expr: str) -> set[str]:
    """The metric (and recording rule) names a PromQL expression selects. Not a parser: strings, label
    matchers, ranges and grouping clauses are removed, then every bare identifier that is not a function call
    or a keyword is a metric name."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    identifiers = re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", text)
    return {name for name in identifiers if name.lower() not in _PROMQL_KEYWORDS}


def unknown_metrics(exprs: Iterable[str]) -> dict[str, set[str]]:
    """Expression -> the names in it that no service, recording rule or Prometheus itself defines."""
    known = exposed_metric_names() | recording_rule_names() | BUILTIN_METRICS
    found = {expr: metric_names_in(expr) - known for expr in exprs}
    return {expr: names for expr, names in found.items() if names}


def github_anchor(heading: str) -> str:
    """The anchor GitHub (and most Markdown renderers) give a heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def runbook_anchors() -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", OPERATIONS.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {github_anchor(heading) for heading in headings}


def alert_test_cases() -> list[dict[str, Any]]:
    return [case for test in load_yaml(RULES_TEST)["tests"] for case in test.get("alert_rule_test") or []]
