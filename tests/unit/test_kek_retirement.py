"""KEK retirement's pure parts: what `wa-archive keys status` says of each KEK id, and the rewrap report."""

from __future__ import annotations

import pytest

from services.core.kek_retirement import KekState, KekUse, RewrapReport, kek_uses

pytestmark = pytest.mark.unit


def use(kek_id: str, keys: int, state: KekState, *, configured: bool = True) -> KekUse:
    return KekUse(kek_id=kek_id, keys=keys, configured=configured, state=state)


@pytest.mark.parametrize(
    ("counts", "configured", "current", "expected"),
    [
        pytest.param({"a": 5}, {"a"}, "a", [use("a", 5, "current")], id="one KEK"),
        pytest.param({}, {"a"}, "a", [use("a", 0, "current")], id="empty archive"),
        pytest.param(
            {"a": 3, "b": 7},
            {"a", "b"},
            "b",
            [use("b", 7, "current"), use("a", 3, "in use")],
            id="rotated: the old KEK still wraps keys",
        ),
        pytest.param(
            {"b": 10},
            {"a", "b"},
            "b",
            [use("b", 10, "current"), use("a", 0, "retirable")],
            id="rewrapped: the old KEK can be removed",
        ),
        pytest.param(
            {"a": 0, "b": 10},
            {"a", "b"},
            "b",
            [use("b", 10, "current"), use("a", 0, "retirable")],
            id="a zero count is no use",
        ),
        pytest.param(
            {"a": 2, "b": 10},
            {"b"},
            "b",
            [use("b", 10, "current"), use("a", 2, "missing", configured=False)],
            id="removed too early: its keys cannot be read",
        ),
        pytest.param(
            {"a": 0},
            {"b"},
            "b",
            [use("b", 0, "current")],
            id="an unconfigured KEK with no key is not listed",
        ),
        pytest.param(
            {"z": 1, "m": 2, "c": 3},
            {"c", "m", "z"},
            "m",
            [use("m", 2, "current"), use("c", 3, "in use"), use("z", 1, "in use")],
            id="current first, then by id",
        ),
    ],
)
def test_kek_uses(counts: dict[str, int], configured: set[str], current: str, expected: list[KekUse]) -> None:
    assert kek_uses(counts, configured, current) == expected


@pytest.mark.parametrize(
    ("after", "remaining"),
    [
        pytest.param({"b": 9}, 0, id="all under the target"),
        pytest.param({"a": 2, "b": 7}, 2, id="keys left under the old KEK"),
        pytest.param({"a": 1, "c": 1, "b": 7}, 2, id="under several others"),
        pytest.param({}, 0, id="no key at all"),
    ],
)
def test_rewrap_report_remaining_counts_every_key_not_under_the_target(after: dict[str, int], remaining: int) -> None:
    report = RewrapReport(to_kek_id="b", before={"a": 9}, after=after)
    assert report.remaining == remaining
    assert report.to_json()["remaining"] == remaining
    assert report.to_json()["keys_by_kek_after"] == after


def test_an_unfinished_rewrap_reports_its_counts_and_no_remainder() -> None:
    report = RewrapReport(to_kek_id="b", before={"a": 9}, walked=4, rewrapped=3, suppressed_dropped=1, batches=2)
    assert report.to_json() == {
        "to_kek_id": "b",
        "rewrapped": 3,
        "suppressed_dropped": 1,
        "skipped_locked": 0,
        "walked": 4,
        "batches": 2,
        "sweeps": 0,
        "copy_objects_deleted": 0,
        "case_keys_rewrapped": 0,
        "keys_by_kek_before": {"a": 9},
    }
