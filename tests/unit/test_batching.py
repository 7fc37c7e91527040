"""Flush policy: a batch closes by count, size or age — and a quiet partition is flushed on time."""

from __future__ import annotations

import pytest

from services.archiver.batching import FlushPolicy, FlushReason, OpenBatch, plan_flush

pytestmark = pytest.mark.unit

POLICY = FlushPolicy(max_records=3, max_bytes=100, max_age_s=2.0)


def batch(opened_at: float, sizes: list[int]) -> OpenBatch[str]:
    opened = OpenBatch[str](opened_at=opened_at)
    for offset, size in enumerate(sizes):
        opened.add(f"r{offset}", offset + 10, size)
    return opened


@pytest.mark.parametrize(
    ("opened", "now", "expected"),
    [
        pytest.param(None, 100.0, None, id="no batch"),
        pytest.param(batch(0.0, []), 100.0, None, id="empty batch never flushes"),
        pytest.param(batch(0.0, [1]), 0.5, None, id="young small batch keeps filling"),
        pytest.param(batch(0.0, [1, 1, 1]), 0.1, FlushReason.COUNT, id="batch closed by count"),
        pytest.param(batch(0.0, [60, 50]), 0.1, FlushReason.SIZE, id="batch closed by size"),
        pytest.param(batch(0.0, [1]), 2.0, FlushReason.AGE, id="batch closed by time"),
        pytest.param(batch(10.0, [1]), 3600.0, FlushReason.AGE, id="quiet partition flushed though nothing arrives"),
        pytest.param(batch(0.0, [200]), 0.0, FlushReason.SIZE, id="one oversized record is its own batch"),
    ],
)
def test_plan_flush(opened: OpenBatch[str] | None, now: float, expected: FlushReason | None) -> None:
    assert plan_flush(opened, POLICY, now) is expected


def test_batch_tracks_offsets_and_size() -> None:
    opened = batch(0.0, [5, 7, 9])
    assert (opened.first_offset, opened.last_offset, opened.size_bytes, len(opened)) == (10, 12, 21, 3)


@pytest.mark.parametrize(
    "limits",
    [
        pytest.param((0, 1, 1.0), id="no records"),
        pytest.param((1, 0, 1.0), id="no bytes"),
        pytest.param((1, 1, 0.0), id="no age"),
    ],
)
def test_policy_rejects_non_positive_limits(limits: tuple[int, int, float]) -> None:
    with pytest.raises(ValueError, match="positive"):
        FlushPolicy(*limits)


def test_split_keeps_offsets_sizes_and_age() -> None:
    opened = batch(5.0, [1, 2, 3, 4, 5])
    head, rest = opened.split(2)
    assert (head.first_offset, head.last_offset, head.size_bytes, len(head)) == (10, 11, 3, 2)
    assert rest is not None
    assert (rest.first_offset, rest.last_offset, rest.size_bytes, rest.opened_at) == (12, 14, 12, 5.0)
    assert opened.split(5) == (opened, None)
