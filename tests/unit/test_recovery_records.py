"""The records kept outside PostgreSQL: a key's copy and an erasure's record read back exactly as written, and
anything else under their folders is reported unreadable, never taken for one."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.key_copies import KeyCopy, UnreadableCopy
from services.governance.erasure_log import ErasureRecord, UnreadableRecord

pytestmark = pytest.mark.unit

refs = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
uuids = st.uuids().map(str)
moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@given(ref=refs, dek_id=uuids, kek_id=st.text(min_size=1, max_size=40), wrapped=st.binary(max_size=200), at=moments)
def test_a_key_copy_reads_back_as_written(ref: str, dek_id: str, kek_id: str, wrapped: bytes, at: datetime) -> None:
    copy = KeyCopy(subject_ref=ref, dek_id=dek_id, kek_id=kek_id, wrapped_dek=wrapped, created_at=at)
    assert KeyCopy.from_bytes(copy.to_bytes()) == copy


@given(
    request_ref=st.text(min_size=1, max_size=80),
    subjects=st.lists(refs, min_size=1, max_size=4, unique=True),
    keys=st.lists(st.tuples(refs, uuids), max_size=4, unique=True),
    erased_at=moments,
    received_at=moments,
    deadline_at=moments,
)
def test_an_erasure_record_reads_back_as_written(
    request_ref: str,
    subjects: list[str],
    keys: list[tuple[str, str]],
    erased_at: datetime,
    received_at: datetime,
    deadline_at: datetime,
) -> None:
    record = ErasureRecord(
        request_ref=request_ref,
        subject_refs=tuple(sorted(subjects)),
        keys=tuple(sorted(keys)),
        erased_at=erased_at,
        received_at=received_at,
        deadline_at=deadline_at,
    )
    assert ErasureRecord.from_bytes(record.to_bytes()) == record


NOT_RECORDS = [
    b"",
    b"not json",
    b"[]",
    b"{}",
    orjson.dumps({"format": "something else"}),
    orjson.dumps({"format": "wa-archive key copy 1", "subject_ref": "a"}),
    orjson.dumps({"format": "wa-archive erasure 1", "request_ref": "r", "keys": [["a"]]}),
]


@pytest.mark.parametrize("body", NOT_RECORDS)
def test_what_is_not_a_record_is_unreadable(body: bytes) -> None:
    with pytest.raises(UnreadableCopy):
        KeyCopy.from_bytes(body)
    with pytest.raises(UnreadableRecord):
        ErasureRecord.from_bytes(body)


@given(st.binary(max_size=300))
def test_any_bytes_are_a_record_or_unreadable(body: bytes) -> None:
    for reader, unreadable in ((KeyCopy.from_bytes, UnreadableCopy), (ErasureRecord.from_bytes, UnreadableRecord)):
        with contextlib.suppress(unreadable):
            reader(body)


def test_an_erasure_record_holds_no_personal_data_beyond_pseudonyms() -> None:
    record = ErasureRecord(
        request_ref="DSR-1",
        subject_refs=("a" * 64,),
        keys=(("a" * 64, "00000000-0000-0000-0000-000000000001"),),
        erased_at=datetime(2026, 1, 1, tzinfo=UTC),
        received_at=datetime(2026, 1, 1, tzinfo=UTC),
        deadline_at=datetime(2026, 2, 1, tzinfo=UTC),
    )
    assert set(orjson.loads(record.to_bytes())) == {
        "format",
        "request_ref",
        "subject_refs",
        "keys",
        "erased_at",
        "received_at",
        "deadline_at",
    }
