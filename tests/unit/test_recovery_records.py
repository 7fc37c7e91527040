"""The records kept outside PostgreSQL: key copies (bundles, and single copies of the first format) and an erasure's
record read back exactly as written, anything else under their folders is reported unreadable, never taken for one,
and bundle names sort newest first."""

from __future__ import annotations

import base64
import contextlib
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.key_copies import BUNDLES, KeyCopy, UnreadableCopy, bundle_bytes, new_bundle_name, read_copies
from services.governance.erasure_log import ErasureRecord, UnreadableRecord

pytestmark = pytest.mark.unit

refs = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
uuids = st.uuids().map(str)
moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


key_copies = st.builds(
    KeyCopy,
    subject_ref=refs,
    dek_id=uuids,
    kek_id=st.text(min_size=1, max_size=40),
    wrapped_dek=st.binary(max_size=200),
    created_at=moments,
)


@given(st.lists(key_copies, min_size=1, max_size=20))
def test_a_bundle_of_key_copies_reads_back_as_written(copies: list[KeyCopy]) -> None:
    assert read_copies(bundle_bytes(copies)) == copies


@given(key_copies)
def test_a_copy_of_the_first_format_still_reads(copy: KeyCopy) -> None:
    body = orjson.dumps(
        {
            "format": "wa-archive key copy 1",
            "subject_ref": copy.subject_ref,
            "dek_id": copy.dek_id,
            "kek_id": copy.kek_id,
            "wrapped_dek": base64.b64encode(copy.wrapped_dek).decode(),
            "created_at": copy.created_at.isoformat(),
        }
    )
    assert read_copies(body) == [copy]


@given(st.integers(min_value=0, max_value=10**13 - 2), st.integers(min_value=1, max_value=10**12))
def test_bundle_names_sort_newest_first(earlier_ms: int, later_by_ms: int) -> None:
    earlier, later = new_bundle_name(earlier_ms), new_bundle_name(min(earlier_ms + later_by_ms, 10**13 - 1))
    assert later.startswith(BUNDLES)
    assert earlier.startswith(BUNDLES)
    assert later < earlier, "a listing meets the newest bundle first"


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
    orjson.dumps({"format": "wa-archive key copies 2", "copies": [{"subject_ref": "a"}]}),
    orjson.dumps({"format": "wa-archive key copies 2", "copies": "x"}),
    orjson.dumps({"format": "wa-archive erasure 1", "request_ref": "r", "keys": [["a"]]}),
]


@pytest.mark.parametrize("body", NOT_RECORDS)
def test_what_is_not_a_record_is_unreadable(body: bytes) -> None:
    with pytest.raises(UnreadableCopy):
        read_copies(body)
    with pytest.raises(UnreadableRecord):
        ErasureRecord.from_bytes(body)


@given(st.binary(max_size=300))
def test_any_bytes_are_a_record_or_unreadable(body: bytes) -> None:
    for reader, unreadable in ((read_copies, UnreadableCopy), (ErasureRecord.from_bytes, UnreadableRecord)):
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
