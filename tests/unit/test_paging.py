"""Which records a conversation page decrypts (services/review/paging.py), from the index rows alone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.core.pseudonym import message_ref
from services.core.reader import RecordLocation
from services.core.vocabulary import EventKind
from services.review.assembly import assemble
from services.review.paging import (
    KEYWORD_CHECK_CHUNK,
    keyword_candidates,
    keyword_chunks,
    plan_page,
    quoted_records,
    timeline_units,
)
from services.review.queries import IndexedRecord

pytestmark = pytest.mark.unit

PEPPER = b"p" * 32


def ref(wamid: str) -> bytes:
    return bytes.fromhex(message_ref(PEPPER, wamid))


def record(n: int, kind: EventKind, kind_type: str | None, wamid: str | None = None, changes: str | None = None,
           obj: str = "o1") -> IndexedRecord:  # fmt: skip
    return IndexedRecord(
        location=RecordLocation(f"{n:032x}", obj, n),
        subject_ref="a" * 64,
        kind=kind,
        type=kind_type,
        event_time=datetime.fromtimestamp(1_760_000_000 + n, UTC),
        received_at=datetime.fromtimestamp(1_760_000_000 + n, UTC),
        message_ref=ref(wamid) if wamid else None,
        original_message_ref=ref(changes) if changes else None,
    )


def eid(n: int) -> str:
    return f"{n:032x}"


# Ten messages (1..10); message 2 is read, then edited (11) and deleted (12); a status of 10 (13); an edit of a
# message the archive does not hold (14: a unit of its own).
RECORDS = [
    *(record(n, "message", "text", f"wamid.{n}") for n in range(1, 11)),
    record(11, "message", "edit", "wamid.e11", changes="wamid.2"),
    record(12, "status", "deleted", "wamid.2", changes="wamid.2"),  # as the index holds a deletion status
    record(13, "status", "read", "wamid.10"),
    record(14, "message", "edit", "wamid.e14", changes="wamid.gone"),
]


def test_the_units_are_the_messages_and_the_changes_of_messages_not_archived() -> None:
    assert [r.event_id for r in timeline_units(RECORDS)] == [eid(n) for n in (*range(1, 11), 14)]


@pytest.mark.parametrize(
    ("page", "anchor", "matched", "number", "first_units", "extra"),
    [
        pytest.param(None, None, [], 2, [eid(9), eid(10), eid(14)], [eid(13)], id="the newest page by default"),
        pytest.param(0, None, [], 0, [eid(1), eid(2), eid(3), eid(4)], [eid(11), eid(12)],
                     id="a page by number, with its message's edit and deletion"),
        pytest.param(99, None, [], 2, [eid(9), eid(10), eid(14)], [eid(13)], id="past the end: clamped"),
        pytest.param(-3, None, [], 0, [eid(1), eid(2), eid(3), eid(4)], [eid(11), eid(12)], id="below zero too"),
        pytest.param(None, eid(6), [], 1, [eid(5), eid(6), eid(7), eid(8)], [], id="the page holding the anchor"),
        pytest.param(None, eid(12), [], 0, [eid(1), eid(2), eid(3), eid(4)], [eid(11), eid(12)],
                     id="a deletion anchors the page of its message"),
        pytest.param(2, None, [eid(7), eid(9)], 1, [eid(5), eid(6), eid(7), eid(8)], [],
                     id="the first keyword match wins over a page number"),
    ],
)  # fmt: skip
def test_plan_page(
    page: int | None, anchor: str | None, matched: list[str], number: int, first_units: list[str], extra: list[str]
) -> None:
    plan = plan_page(RECORDS, page_size=4, page=page, anchor=anchor, matched=matched)
    assert (plan.number, plan.count, plan.total, plan.first) == (number, 3, 11, number * 4 + 1)
    assert sorted(r.event_id for r in plan.needed) == sorted(first_units + extra)


def test_an_anchor_that_is_not_in_the_conversation_is_dropped() -> None:
    plan = plan_page(RECORDS, page_size=4, page=None, anchor=eid(99), matched=[])
    assert (plan.anchor, plan.number) == (None, 2)


def test_an_empty_conversation_is_one_empty_page() -> None:
    plan = plan_page([], page_size=4, page=None, anchor=None, matched=[])
    assert (plan.number, plan.count, plan.total, plan.needed) == (0, 1, 0, [])


def test_keyword_candidates_come_in_chunks_with_their_edits() -> None:
    records = [*(record(n, "message", "text", f"wamid.{n}", obj="hot" if n % 2 else "cold")
                 for n in range(1, KEYWORD_CHECK_CHUNK * 2 + 2)),
               record(1000, "message", "edit", "wamid.x", changes="wamid.1", obj="cold")]  # fmt: skip
    candidates = keyword_candidates(records, {("hot", "a" * 64)})
    assert [r.location.object_key for r in candidates] == ["hot"] * (KEYWORD_CHECK_CHUNK + 1)
    chunks = keyword_chunks(candidates, records)
    assert [len(c) for c in chunks] == [KEYWORD_CHECK_CHUNK + 1, 1]  # message 1's edit rides with it
    assert chunks[0][-1].event_id == eid(1000)


def test_the_quoted_messages_off_the_page_are_read_for_their_excerpt() -> None:
    def envelope(n: int, context: str | None = None) -> dict[str, object]:
        payload: dict[str, object] = {"id": f"wamid.{n}", "type": "text", "text": {"body": str(n)}}
        if context:
            payload["context"] = {"id": context}
        return {"event_id": eid(n), "kind": "message", "type": "text", "message_id": f"wamid.{n}", "timestamp": n,
                "received_at": "", "payload": payload}  # fmt: skip

    page = assemble([envelope(9, context="wamid.2"), envelope(10, context="wamid.9"), envelope(8, "wamid.gone")])
    assert [r.event_id for r in quoted_records(page, RECORDS, PEPPER)] == [eid(2)]
