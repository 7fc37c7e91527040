"""The pure parts of replaying parked records (services/relay/replay.py): which parking offsets a run delivers, what
a listing row shows, and how one parked record is delivered (signature, journal position, retry, where it stops)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.http1 import RequestFailed
from services.core.journal import SIGNATURE_HEADER, webhook_record
from services.ingest.signature import sign
from services.relay.delivery import HUB_SIGNATURE, META_SIGNATURE, RECORD_POSITION, Backoff
from services.relay.relay import PARK_ATTEMPTS_HEADER, PARK_REASON_HEADER, PARK_SOURCE_HEADER, Destination
from services.relay.replay import Stop, deliver_parked, describe_parked, replay_group, replay_window

pytestmark = pytest.mark.unit

SECRET = b"meta-app-secret"
RAW = b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{}}]}]}'


@pytest.mark.parametrize(
    ("low", "high", "committed", "from_offset", "to_offset", "expected"),
    [
        pytest.param(0, 5, None, None, None, range(0, 5), id="never replayed: everything"),
        pytest.param(0, 5, 3, None, None, range(3, 5), id="resumes after what was replayed"),
        pytest.param(0, 5, 5, None, None, range(5, 5), id="all replayed: nothing"),
        pytest.param(0, 5, None, 2, 3, range(2, 4), id="--from and --to are inclusive"),
        pytest.param(0, 5, 3, 1, None, range(3, 5), id="--from never moves the group back"),
        pytest.param(0, 5, None, None, 99, range(0, 5), id="--to past the end: the end as found"),
        pytest.param(4, 9, 2, None, None, range(4, 9), id="group behind the oldest record kept"),
        pytest.param(0, 5, 4, None, 2, range(4, 4), id="--to before the group's position: nothing"),
    ],
)
def test_replay_window(
    low: int, high: int, committed: int | None, from_offset: int | None, to_offset: int | None, expected: range
) -> None:
    assert replay_window(low=low, high=high, committed=committed, from_offset=from_offset, to_offset=to_offset) == (
        expected
    )


@settings(max_examples=200, deadline=None)
@given(
    low=st.integers(0, 50),
    size=st.integers(0, 50),
    committed=st.none() | st.integers(0, 120),
    from_offset=st.none() | st.integers(0, 120),
    to_offset=st.none() | st.integers(0, 120),
)
def test_a_window_never_repeats_a_replayed_record_nor_leaves_the_topic(
    low: int, size: int, committed: int | None, from_offset: int | None, to_offset: int | None
) -> None:
    high = low + size
    window = replay_window(low=low, high=high, committed=committed, from_offset=from_offset, to_offset=to_offset)
    for offset in window:
        assert low <= offset < high
        assert committed is None or offset >= committed
        assert from_offset is None or offset >= from_offset
        assert to_offset is None or offset <= to_offset


def test_the_replay_group_is_not_the_delivery_group() -> None:
    assert replay_group("wa-relay-", "inbox") == "wa-relay-inbox-replay"


def parked_headers(*, signed: bool = True) -> list[tuple[str, bytes]]:
    record = webhook_record("wa.events.v1", "111", RAW, signature=sign(RAW, SECRET), received_at="2026-12-06T00:00Z")
    headers = [h for h in record.headers if signed or h[0] != SIGNATURE_HEADER]
    return [
        *headers,
        (PARK_REASON_HEADER, b"rejected: HTTP 401"),
        (PARK_SOURCE_HEADER, b"wa.events.v1/2/41"),
        (PARK_ATTEMPTS_HEADER, b"1"),
    ]


def test_a_listing_row_names_offsets_reason_source_and_no_body() -> None:
    row = describe_parked(0, 7, 1_765_000_000_000, parked_headers(), committed=7)
    assert (row.partition, row.offset, row.reason, row.source, row.attempts) == (
        0,
        7,
        "rejected: HTTP 401",
        "wa.events.v1/2/41",
        1,
    )
    assert not row.replayed
    assert describe_parked(0, 6, 0, parked_headers(), committed=7).replayed
    bare = describe_parked(0, 1, 0, None, committed=None)
    assert (bare.reason, bare.source, bare.attempts, bare.replayed) == ("?", "?", None, False)


@dataclass
class Receiver:
    answers: list[int | Exception]
    got: list[Mapping[str, str]] = field(default_factory=list)

    async def post(self, body: bytes, headers: Mapping[str, str]) -> int:
        self.got.append(dict(headers))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def destination(secret: bytes | None = None) -> Destination:
    return Destination(
        name="inbox",
        url="http://127.0.0.1:1/",
        fields=frozenset(),
        secret=secret,
        backoff=Backoff(initial_s=1.0, max_s=4.0, jitter=0.0, budget_s=3600.0),
        parking_topic="wa-relay-inbox-parked",
    )


async def deliver(
    receiver: Receiver, *, secret: bytes | None = None, signed: bool = True, budget_s: float = 10.0
) -> Stop | None:
    """Deliver one parked record (parking offset 3) on a manual clock: the waits add up, nothing sleeps."""
    now = [0.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    record = SimpleNamespace(
        topic="wa-relay-inbox-parked", partition=0, offset=3, value=RAW, headers=parked_headers(signed=signed)
    )
    return await deliver_parked(
        destination(secret), receiver, record, budget_s, clock=lambda: now[0], draw=lambda: 0.0, sleep=sleep
    )


async def test_a_parked_record_goes_out_with_metas_signature_and_its_journal_position() -> None:
    receiver = Receiver([200])
    assert await deliver(receiver) is None
    (headers,) = receiver.got
    assert headers[HUB_SIGNATURE] == sign(RAW, SECRET)
    assert headers[RECORD_POSITION] == "wa.events.v1/2/41"  # the original's: a receiver drops a duplicate by it


async def test_a_destination_with_its_own_secret_gets_its_own_signature() -> None:
    receiver = Receiver([200])
    assert await deliver(receiver, secret=b"own") is None
    assert receiver.got[0][HUB_SIGNATURE] == sign(RAW, b"own")
    assert receiver.got[0][META_SIGNATURE] == sign(RAW, SECRET)


async def test_a_passing_failure_is_retried_until_delivered() -> None:
    receiver = Receiver([503, RequestFailed("refused"), 429, 200])
    assert await deliver(receiver) is None
    assert len(receiver.got) == 4


@pytest.mark.parametrize(
    ("answers", "kind", "attempts"),
    [
        pytest.param([401], "rejected", 1, id="a refusal stops at once"),
        pytest.param([302], "rejected", 1, id="a redirect is not followed"),
        pytest.param([503], "retry_budget_exhausted", 4, id="waits 1+2+4 s within 10 s, then stops"),
    ],
)
async def test_a_record_that_is_not_taken_stops_the_run_there(
    answers: list[int | Exception], kind: str, attempts: int
) -> None:
    receiver = Receiver(answers)
    stop = await deliver(receiver)
    assert stop is not None
    assert (stop.kind, stop.partition, stop.offset) == (kind, 0, 3)
    assert len(receiver.got) == attempts


async def test_a_record_without_metas_signature_for_a_destination_without_a_secret_is_not_sent() -> None:
    receiver = Receiver([200])
    stop = await deliver(receiver, signed=False)
    assert stop is not None
    assert stop.kind == "unsigned"
    assert receiver.got == []
