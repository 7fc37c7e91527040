"""The alert and recording rules: valid for promtool, unit-tested, documented, and built on real metrics.

`promtool check rules` and `promtool test rules` (deploy/prometheus/tests/rules_test.yml) do the PromQL work;
this module adds what promtool cannot know: every alert has a runbook heading in docs/OPERATIONS.md and a
firing and a silent test case, and every metric a rule reads is defined in a services/*/metrics.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from devtools.samples import REPO_ROOT
from tests.helpers.prometheus_rules import (
    RULES,
    RULES_TEST,
    RUNBOOK_PREFIX,
    alert_names,
    alert_rules,
    alert_test_cases,
    metric_names_in,
    rules,
    run_promtool,
    runbook_anchors,
    unknown_metrics,
)

pytestmark = pytest.mark.unit


def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", str(RULES.relative_to(REPO_ROOT)))
    assert result.returncode == 0, f"promtool check rules failed:\n{result.stdout}\n{result.stderr}"


def test_promtool_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", str(RULES_TEST.relative_to(REPO_ROOT)))
    assert result.returncode == 0, f"promtool test rules failed:\n{result.stdout}\n{result.stderr}"


def test_the_expected_alerts_exist() -> None:
    assert alert_names() == sorted(
        [
            "WaArchiveStale",
            "WaArchiveNeverArchived",
            "WaArchiverLagHigh",
            "WaArchiverDown",
            "WaIngestDown",
            "WaIngestSignatureFailures",
            "WaIngestKafkaUnavailable",
            "WaArchiverDeadLetters",
            "WaArchiverDiedWriting",
            "WaArchiverMediaFailing",
            "WaArchiverMediaGivenUp",
            "WaRetentionRunMissing",
            "WaErasureDeadlineNear",
            "WaErasureOverdue",
            "WaApprovalExpiringUnanswered",
            "WaArchiveTamperingSuspected",
            "WaArchiveVerifyStale",
            "WaBreakGlassAccess",
            "WaArchiverNotCommitting",
            "WaPgWalArchivingStalled",
            "WaPgWalArchiveFailing",
            "WaPgBaseBackupStale",
            "WaPgBackupProbeFailing",
            "WaRelayDestinationLagging",
            "WaRelayDestinationStale",
            "WaRelayNotReporting",
            "WaRelayParking",
        ]
    )


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: str(rule["alert"]))
def test_alert_has_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    assert rule.get("labels", {}).get("severity") in {"critical", "warning"}
    annotations = rule.get("annotations", {})
    assert annotations.get("summary"), "summary annotation missing"
    assert annotations.get("description"), "description annotation missing"
    assert annotations.get("runbook_url") == RUNBOOK_PREFIX + rule["alert"].lower()


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: str(rule["alert"]))
def test_runbook_anchor_is_a_heading_of_operations_md(rule: dict[str, Any]) -> None:
    anchor = rule["annotations"]["runbook_url"].removeprefix(RUNBOOK_PREFIX)
    assert anchor in runbook_anchors(), f"docs/OPERATIONS.md has no heading `{rule['alert']}` (anchor #{anchor})"


@pytest.mark.parametrize("alert", alert_names())
def test_alert_has_a_firing_and_a_silent_test_case(alert: str) -> None:
    cases = [case for case in alert_test_cases() if case["alertname"] == alert]
    assert any(case.get("exp_alerts") for case in cases), f"no case in rules_test.yml where {alert} fires"
    assert any(not case.get("exp_alerts") for case in cases), f"no case in rules_test.yml where {alert} is silent"


def test_rules_read_only_metrics_the_services_define() -> None:
    assert unknown_metrics(rule["expr"] for rule in rules()) == {}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        pytest.param("up", {"up"}, id="bare name"),
        pytest.param('absent(up{job="wa-archiver"})', {"up"}, id="function and matcher"),
        pytest.param(
            "sum by (reason) (increase(x_total[15m])) or on() vector(0)", {"x_total"}, id="grouping and range"
        ),
        pytest.param("a unless a offset 15m > 1e3", {"a"}, id="offset and number"),
        pytest.param("time() - wa_archive:freshness_timestamp_seconds", {"wa_archive:freshness_timestamp_seconds"}),
        pytest.param('count(y{route=~"a|b"}) by (route)', {"y"}, id="trailing by"),
    ],
)
def test_metric_names_in(expr: str, names: set[str]) -> None:
    assert metric_names_in(expr) == names
