"""The media sweep's schedule: 5 minutes after a failure, doubling, never more than 6 hours apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.archiver.sweep import next_attempt

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("sweeps", "delay"),
    [
        pytest.param(0, timedelta(minutes=5), id="first"),
        pytest.param(1, timedelta(minutes=10), id="second"),
        pytest.param(4, timedelta(minutes=80), id="fifth"),
        pytest.param(7, timedelta(hours=6), id="capped"),
        pytest.param(10_000, timedelta(hours=6), id="no overflow"),
    ],
)
def test_next_attempt(sweeps: int, delay: timedelta) -> None:
    assert next_attempt(NOW, sweeps) == NOW + delay
