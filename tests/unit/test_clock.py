"""Ingest's received_at clock: the same text as datetime's ISO format, milliseconds truncated, ``Z``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from services.core.vocabulary import rfc3339_millis
from services.ingest.app import UtcClock

pytestmark = pytest.mark.unit

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def expected(ns: int) -> str:
    moment = EPOCH + timedelta(microseconds=ns // 1000)  # datetime.now() floors the clock to microseconds
    return rfc3339_millis(moment)


@pytest.mark.parametrize(
    "ns",
    [
        0,
        1_760_000_000_000_000_000,
        1_760_000_000_000_999_999,  # just under a millisecond: truncated, not rounded
        1_760_000_000_998_000_000,
        1_760_000_000_999_999_999,
        1_767_225_599_500_000_000,  # 2025-12-31T23:59:59.500Z, a year's last second
        1_709_164_800_250_000_000,  # 2024-02-29 (leap day)
    ],
)
def test_same_text_as_datetime(ns: int) -> None:
    assert UtcClock(lambda: ns)() == expected(ns)


def test_crossing_seconds_reformats() -> None:
    readings = [
        1_760_000_000_998_000_000,
        1_760_000_001_002_000_000,  # the next second
        1_760_000_001_500_000_000,  # the same second again
        1_760_000_061_000_000_000,  # a minute later
        1_760_000_000_100_000_000,  # the clock stepped back
    ]
    current = iter(readings)
    clock = UtcClock(lambda: next(current))
    assert [clock() for _ in readings] == [expected(ns) for ns in readings]


def test_shape_now() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", UtcClock()())
