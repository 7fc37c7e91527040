"""The archiver's pure step: poison screening, ownership, sealing, index rows and retention, without any server."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.archiver.media import MediaRef, MediaResult
from services.archiver.sealing import (
    BUSINESS_SUBJECT,
    ConsumedRecord,
    RawRecord,
    SealedBatch,
    decode_record,
    media_row,
    open_media_retry,
    people_of,
    pseudonyms_of,
    screen_erased,
    seal_batch,
)
from services.core.container import decode_container, media_record_id, object_key, read_header
from services.core.crypto import CachedDek, RecordTampered, open_record
from services.core.events import MAX_STORED_TEXT, Event, text_fault
from services.core.index import INDEX_COLUMNS, IndexRow, alias_rows, event_time, index_row
from services.core.policy import Classifier, RetentionClass, RetentionPolicy, parse_policy
from services.core.pseudonym import group_ref, message_ref, subject_ref
from tests.helpers.events import event

pytestmark = pytest.mark.unit

PEPPER = b"pepper-for-unit-tests"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = parse_policy(
    {
        "default_class": "standard",
        "classes": [
            {"name": "marketing", "keep_for": "365d", "match": {"kind": ["template"]}},
            {"name": "orders", "keep_for": "10y", "match": {"type": ["order"]}},
            {"name": "standard", "keep_for": "7y"},
        ],
    }
)


def consumed(e: Event, offset: int, partition: int = 3) -> ConsumedRecord:
    return ConsumedRecord(
        partition=partition, offset=offset, timestamp_ms=1_000, key=e.key(), value=e.to_json(), event=e, poison=None
    )


def keys_for(*events: Event) -> dict[str, CachedDek]:
    return {pseudonyms_of(PEPPER, e).sealing: CachedDek(f"dek-{i}", os.urandom(32)) for i, e in enumerate(events)}


def seal(
    *events: Event,
    keys: dict[str, CachedDek] | None = None,
    media: dict[str, MediaRef] | None = None,
    first_offset: int = 1,
) -> SealedBatch:
    """Seal ``events`` as consecutive records of partition 3 into one object of prefix ``p``, topic ``t``."""
    records = [consumed(e, first_offset + n) for n, e in enumerate(events)]
    return seal_batch(
        records,
        [pseudonyms_of(PEPPER, e) for e in events],
        keys if keys is not None else keys_for(*events),
        topic="t",
        prefix="p",
        pepper=PEPPER,
        classify=Classifier(POLICY),
        now=NOW,
        retain_until=None,
        media=media,
    )


# ---------------------------------------------------------------- poison screening
@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        pytest.param({}, None, id="an ordinary message is archived"),
        pytest.param({"phone_number_id": "1065\x00403"}, "unstorable phone_number_id: contains NUL", id="NUL"),
        pytest.param({"waba_id": "\x00"}, "unstorable waba_id: contains NUL", id="NUL in the WABA"),
        pytest.param({"type_": "te\ud800xt"}, "unstorable type: contains a lone surrogate", id="lone surrogate"),
        pytest.param(
            {"phone_number_id": "9" * (MAX_STORED_TEXT + 1)},
            f"unstorable phone_number_id: longer than {MAX_STORED_TEXT} characters",
            id="over-long id",
        ),
        pytest.param({"type_": "é" * MAX_STORED_TEXT}, None, id="long but storable text"),
        pytest.param({"wa_id": "1650\x00\ud800"}, None, id="odd person ids are pseudonymised, not stored"),
        pytest.param({"message_id": "wamid.\ud800"}, None, id="odd message ids are pseudonymised, not stored"),
        pytest.param({"timestamp": 2**63 - 1}, None, id="a timestamp beyond the calendar"),
    ],
)
def test_decode_refuses_only_what_the_index_cannot_store(changes: dict[str, Any], reason: str | None) -> None:
    record = event(**changes)
    (decoded,) = decode_record(
        RawRecord(partition=0, offset=7, timestamp_ms=1_000, key=record.key(), value=record.to_json())
    )
    assert decoded.poison == reason
    assert (decoded.event is None) == (reason is not None)


@pytest.mark.parametrize(
    ("value", "poison"),
    [
        pytest.param(None, "empty record", id="tombstone"),
        pytest.param(b"{", "not an event envelope: not JSON", id="not JSON"),
        pytest.param(b'{"schema": 2}', "not an event envelope: 'schema' must be 1", id="another schema"),
    ],
)
def test_decode_names_why_a_record_is_not_an_envelope(value: bytes | None, poison: str) -> None:
    (decoded,) = decode_record(RawRecord(partition=0, offset=1, timestamp_ms=0, key=None, value=value))
    assert decoded.poison == poison
    assert decoded.event is None


def test_an_envelope_record_is_sealed_as_the_exact_bytes_kafka_carried() -> None:
    record = event()
    value = record.to_json().replace(b'"schema":1', b'"schema": 1')  # another serialisation of the same envelope
    (decoded,) = decode_record(RawRecord(partition=0, offset=3, timestamp_ms=0, key=b"k", value=value))
    assert decoded.value == value
    assert decoded.event == record


def test_text_fault_accepts_every_real_meta_value() -> None:
    assert text_fault("106540352242922") is None
    assert text_fault("interactive") is None
    assert text_fault("") is None


# ---------------------------------------------------------------- ownership
@pytest.mark.parametrize(
    ("wa_id", "user_id", "aliases"),
    [
        pytest.param("16505551234", None, ("16505551234",), id="phone only"),
        pytest.param(None, "US.13491208655302741918", ("US.13491208655302741918",), id="business-scoped id only"),
        pytest.param("16505551234", "US.1349", ("16505551234", "US.1349"), id="both: one alias each"),
    ],
)
def test_a_person_owns_their_record_under_every_identifier(
    wa_id: str | None, user_id: str | None, aliases: tuple[str, ...]
) -> None:
    owner = pseudonyms_of(PEPPER, event(wa_id=wa_id, user_id=user_id))
    expected = tuple(subject_ref(PEPPER, "106540352242922", person) for person in aliases)
    assert owner.aliases == expected
    assert owner.sealing == expected[0]


@pytest.mark.parametrize(
    ("contact", "parent"),
    [
        pytest.param({"wa_id": "16505551234", "parent_user_id": "US.ENT.118157"}, "US.ENT.118157", id="given"),
        pytest.param({"wa_id": "16505551234"}, None, id="absent"),
        pytest.param({"parent_user_id": ""}, None, id="empty"),
        pytest.param({"parent_user_id": 118157}, None, id="not a string"),
        pytest.param({"parent_user_id": "U" * (MAX_STORED_TEXT + 1)}, None, id="too long"),
        pytest.param(["not", "an", "object"], None, id="not an object"),
    ],
)
def test_the_parent_bsuid_of_the_contact_is_one_more_identifier(contact: object, parent: str | None) -> None:
    owner = pseudonyms_of(PEPPER, replace(event(wa_id="16505551234"), contact=contact))
    phone = subject_ref(PEPPER, "106540352242922", "16505551234")
    assert owner.sealing == phone  # the parent id names the person; it never seals their records
    extra = (subject_ref(PEPPER, "106540352242922", parent),) if parent else ()
    assert owner.aliases == (phone, *extra)


def test_a_parent_bsuid_on_a_business_record_is_ignored() -> None:
    record = replace(event(kind="account", wa_id=None), contact={"parent_user_id": "US.ENT.1"})
    assert pseudonyms_of(PEPPER, record).aliases == ()


def test_a_record_of_no_customer_is_the_business_s() -> None:
    owner = pseudonyms_of(PEPPER, event(kind="account", wa_id=None, phone_number_id=None))
    assert owner.sealing == subject_ref(PEPPER, "102290129340398", BUSINESS_SUBJECT)
    assert owner.aliases == ()


# ---------------------------------------------------------------- sealing
def test_seal_batch_seals_each_record_for_its_person_and_indexes_it() -> None:
    alice = event(seed="a", wa_id="111", message_id="wamid.1")
    bob = event(seed="b", wa_id="222", message_id="wamid.2", type_="order")
    alice_again = event(seed="c", wa_id="111", message_id="wamid.3", kind="echo")
    records = [consumed(alice, 40), consumed(bob, 41), consumed(alice_again, 43)]
    owners = [pseudonyms_of(PEPPER, r.event) for r in records if r.event]
    keys = keys_for(alice, bob)
    until = NOW + timedelta(days=30)
    sealed = seal_batch(
        records,
        owners,
        keys,
        topic="wa.events.v1",
        prefix="archive",
        pepper=PEPPER,
        classify=Classifier(POLICY),
        now=NOW,
        retain_until=until,
    )

    assert sealed.object_key == "archive/wa.events.v1/00003/00000000000000000040.waarc"
    assert sealed.object_row.first_offset == 40
    assert sealed.object_row.last_offset == 43
    assert sealed.object_row.record_count == 3
    assert sealed.object_row.size_bytes == len(sealed.blob)
    assert sealed.object_row.retain_until == until
    assert sealed.keys_used == {owner.sealing: keys[owner.sealing].dek_id for owner in owners}
    assert sealed.aliases == {(owners[0].sealing, owners[0].sealing), (owners[1].sealing, owners[1].sealing)}

    container = decode_container(sealed.blob)
    for position, (record, owner) in enumerate(zip(records, owners, strict=True)):
        entry = container.records[position]
        assert entry.meta.subject_ref == owner.sealing
        assert entry.meta.message_ref == message_ref(PEPPER, record.event.message_id or "")  # type: ignore[union-attr]
        plain = open_record(
            entry.sealed, keys[owner.sealing].dek, event_id=entry.meta.event_id, subject_ref=owner.sealing
        )
        assert plain == record.value, "the record is sealed as the exact bytes Kafka carried"
        row = sealed.index_rows[position]
        assert (row.object_key, row.record_index, row.kafka_offset) == (sealed.object_key, position, record.offset)
    # Another person's key does not open a record.
    with pytest.raises(Exception, match="does not authenticate"):
        open_record(
            container.records[0].sealed,
            keys[owners[1].sealing].dek,
            event_id=container.records[0].meta.event_id,
            subject_ref=owners[0].sealing,
        )
    assert [row.retention_class for row in sealed.index_rows] == ["standard", "orders", "standard"]


def test_seal_batch_refuses_a_dead_letter() -> None:
    dead = ConsumedRecord(
        partition=0,
        offset=1,
        timestamp_ms=0,
        key=None,
        value=b"x",
        event=None,
        poison="not an event envelope: not JSON",
    )
    with pytest.raises(ValueError, match="no event"):
        seal_batch(
            [dead],
            [pseudonyms_of(PEPPER, event())],
            keys_for(event()),
            topic="t",
            prefix="p",
            pepper=PEPPER,
            classify=Classifier(POLICY),
            now=NOW,
            retain_until=None,
        )


def test_a_medium_is_archived_under_its_message_owner_key_in_an_object_of_its_own() -> None:
    photo = event(type_="image", payload={"type": "image", "image": {"id": "m1"}})
    owner = pseudonyms_of(PEPPER, photo)
    keys = keys_for(photo)
    ref = MediaRef("m1", "image/jpeg", None)
    sealed = seal(photo, keys=keys, media={photo.event_id: ref})
    [job] = sealed.media
    target = job.target
    assert job.ref == ref
    assert (target.object_key, target.record_id) == (f"p/media/{photo.event_id}.waarc", media_record_id(photo.event_id))
    assert (target.sealing, target.dek) == (owner.sealing, keys[owner.sealing])
    assert (target.source.partition, target.source.first_offset, target.source.last_offset) == (3, 1, 1)
    meta = target.meta("image/png")
    assert (meta.kind, meta.type, meta.event_id, meta.dek_id) == ("media", "image/png", target.record_id, "dek-0")
    assert target.meta("image/\x00").type is None  # a label the header cannot carry is dropped, the file kept


@pytest.mark.parametrize(
    ("fetched", "status", "mime_type", "object_key", "size"),
    [
        pytest.param(MediaResult("m1", "image/png", 1, None, 4), "archived", "image/png", True, 4, id="fetched"),
        pytest.param(MediaResult("m1", None, 3, "http 404"), "missing", "image/jpeg", False, None, id="gone"),
        pytest.param(MediaResult("m1", "image/\x00", 1, None, 4), "archived", None, True, 4, id="unusable mime"),
    ],
)
def test_media_row(
    fetched: MediaResult, status: str, mime_type: str | None, object_key: bool, size: int | None
) -> None:
    photo = event(type_="image", payload={"type": "image", "image": {"id": "m1"}})
    [job] = seal(photo, media={photo.event_id: MediaRef("m1", "image/jpeg", None)}).media
    row = media_row(job, fetched)
    assert (row.event_id, row.subject_ref, row.status, row.mime_type) == (
        photo.event_id,
        job.target.sealing,
        status,
        mime_type,
    )
    assert (row.object_key, row.size_bytes, row.failure) == (
        job.target.object_key if object_key else None,
        size,
        fetched.failure,
    )


# ---------------------------------------------------------------- index rows, shared with rebuild-index
@pytest.mark.parametrize(
    ("timestamp", "received_at", "expected_time", "expected_expiry"),
    [
        pytest.param(
            1_760_000_000,
            "2026-12-01T11:59:59Z",
            datetime.fromtimestamp(1_760_000_000, UTC),
            datetime.fromtimestamp(1_760_000_000, UTC) + timedelta(days=7 * 365),
            id="Meta's event time runs the retention clock",
        ),
        pytest.param(
            None,
            "2026-12-01T11:59:59Z",
            datetime(2026, 12, 1, 11, 59, 59, tzinfo=UTC),
            datetime(2026, 12, 1, 11, 59, 59, tzinfo=UTC) + timedelta(days=7 * 365),
            id="no event time: the receipt time",
        ),
        pytest.param(
            1_099_511_627_776,
            "2026-12-01T11:59:59Z",
            datetime(2026, 12, 1, 11, 59, 59, tzinfo=UTC),
            datetime(2026, 12, 1, 11, 59, 59, tzinfo=UTC) + timedelta(days=7 * 365),
            id="an event time beyond the calendar: the receipt time",
        ),
        pytest.param(
            253_402_300_000,  # year 9999
            "2026-12-01T11:59:59Z",
            datetime.fromtimestamp(253_402_300_000, UTC),
            datetime.max.replace(tzinfo=UTC),
            id="an expiry beyond the calendar is its last instant",
        ),
        pytest.param(None, "not a time", NOW, NOW + timedelta(days=7 * 365), id="unreadable receipt time: now"),
    ],
)
def test_index_row_times(
    timestamp: int | None, received_at: str, expected_time: datetime, expected_expiry: datetime
) -> None:
    sealed = seal(event(timestamp=timestamp, received_at=received_at))
    [row] = sealed.index_rows
    assert row.event_time == expected_time
    assert row.expires_at == expected_expiry
    # rebuild-index reads the same header and must make the same row.
    [meta] = read_header(sealed.blob)[2]
    rebuilt = index_row(
        meta, object_key=sealed.object_key, record_index=0, partition=3, classify=Classifier(POLICY), now=NOW
    )
    assert rebuilt == row


def test_index_rows_are_copy_tuples_in_column_order() -> None:
    row = IndexRow(*range(len(INDEX_COLUMNS)))
    assert tuple(row) == tuple(range(len(INDEX_COLUMNS)))
    assert INDEX_COLUMNS[0] == "event_id"
    assert INDEX_COLUMNS[-3:] == ("expires_at", "anchor_last_contact", "group_ref")  # 0008, 0011 appended them


def test_event_time_of_absent_and_impossible_timestamps() -> None:
    assert event_time(None) is None
    assert event_time(2**63 - 1) is None
    assert event_time(0) == datetime(1970, 1, 1, tzinfo=UTC)


def test_alias_rows_of_a_business_record_link_it_to_itself() -> None:
    record = event(kind="account", wa_id=None)
    owner = pseudonyms_of(PEPPER, record)
    sealed = seal(record)
    [meta] = read_header(sealed.blob)[2]
    assert list(alias_rows(meta)) == [(owner.sealing, owner.sealing)]


def test_classifier_remembers_but_answers_like_the_policy() -> None:
    classify = Classifier(POLICY, capacity=2)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    for kind, type_ in [("template", None), ("message", "order"), ("message", "text"), ("template", None)]:
        assert classify("1", kind, type_, when) == POLICY.classify(
            phone_number_id="1", kind=kind, type_=type_, event_time=when
        )
    single = RetentionPolicy((RetentionClass("only", timedelta(days=1), {}),), "only", {})
    assert Classifier(single)("1", "message", None, when) == ("only", when + timedelta(days=1))


def test_object_key_of_a_sealed_batch_is_its_first_offset() -> None:
    first, second = event(seed="d"), replace(event(seed="e"), message_id="wamid.E")
    sealed = seal(first, second, first_offset=100)
    source = read_header(sealed.blob)[0]
    assert sealed.object_key.endswith("/00000000000000000100.waarc")
    assert (source.first_offset, source.last_offset) == (100, 101)
    assert object_key("p", source) == sealed.object_key
    assert [row.event_id for row in sealed.index_rows] == [
        bytes.fromhex(first.event_id),
        bytes.fromhex(second.event_id),
    ]


# ---------------------------------------------------------------- erasure is final
ERASED_AT = datetime(2026, 11, 30, 10, 0, 0, 300_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "erased_refs", "dropped"),
    [
        pytest.param({}, {}, False, id="nobody erased"),
        pytest.param({"timestamp": int(ERASED_AT.timestamp()) - 60}, {"wa": ERASED_AT}, True, id="before: dropped"),
        pytest.param({"timestamp": int(ERASED_AT.timestamp()) + 60}, {"wa": ERASED_AT}, False, id="after: new data"),
        pytest.param(
            {"timestamp": int(ERASED_AT.timestamp())}, {"wa": ERASED_AT}, True, id="the erasure's second: before"
        ),
        pytest.param(
            {"timestamp": int(ERASED_AT.timestamp()) - 60, "user_id": "US.1"},
            {"user": ERASED_AT},
            True,
            id="erased under the other identifier",
        ),
        pytest.param(
            {"timestamp": None, "received_at": "2026-11-30T09:00:00Z"},
            {"wa": ERASED_AT},
            True,
            id="no event time: received before",
        ),
        pytest.param(
            {"timestamp": None, "received_at": "2026-11-30T11:00:00Z"},
            {"wa": ERASED_AT},
            False,
            id="no event time: received after",
        ),
        pytest.param(
            {"timestamp": int(ERASED_AT.timestamp()) - 60}, {"other": ERASED_AT}, False, id="someone else erased"
        ),
    ],
)
def test_records_of_a_person_erased_after_them_are_dropped(
    changes: dict[str, Any], erased_refs: dict[str, datetime], dropped: bool
) -> None:
    record = event(wa_id="16505551234", **changes)
    owner = pseudonyms_of(PEPPER, record)
    names = {
        "wa": subject_ref(PEPPER, "106540352242922", "16505551234"),
        "user": subject_ref(PEPPER, "106540352242922", "US.1"),
        "other": subject_ref(PEPPER, "106540352242922", "19999999999"),
    }
    erased = {names[name]: at for name, at in erased_refs.items()}
    kept, kept_owners, tombstones = screen_erased([consumed(record, 1)], [owner], erased, NOW)
    assert [t.event_id for t in tombstones] == ([record.event_id] if dropped else [])
    assert [r.event for r in kept] == ([] if dropped else [record])
    assert kept_owners == ([] if dropped else [owner])
    if dropped:
        assert tombstones[0].subject_ref == owner.sealing, "the tombstone names a pseudonym, nothing else"


def test_screening_keeps_the_others_of_the_batch_in_order() -> None:
    erased_person = event(seed="a", wa_id="111", timestamp=1_700_000_000)
    other = event(seed="b", wa_id="222", timestamp=1_700_000_000)
    later = event(seed="c", wa_id="111", timestamp=int(NOW.timestamp()) + 10)
    records = [consumed(erased_person, 1), consumed(other, 2), consumed(later, 3)]
    owners = [pseudonyms_of(PEPPER, e) for e in (erased_person, other, later)]
    kept, _owners, tombstones = screen_erased(records, owners, {owners[0].sealing: NOW}, NOW)
    assert [r.offset for r in kept] == [2, 3]
    assert [t.event_id for t in tombstones] == [erased_person.event_id]
    assert people_of(owners) == {owners[0].sealing, owners[1].sealing}


def test_a_group_s_events_are_indexed_under_its_pseudonym_and_sealed_under_their_person() -> None:
    group = "Y2FwaV9ncm91cDoxNzA1NTU1MDEzOToxMjAzNjM0MDQ2OTQyMzM4MjAZD"
    alice = replace(event(seed="a", wa_id="16505551234"), group_id=group)
    bob = replace(event(seed="b", wa_id="16505559876"), group_id=group)
    business = replace(event(seed="c", kind="group", wa_id=None, message_id=None), group_id=group)
    alone = event(seed="d", wa_id="16505551234")
    sealed = seal(alice, bob, business, alone)
    expected = bytes.fromhex(group_ref(PEPPER, group))
    assert [row.group_ref for row in sealed.index_rows] == [expected, expected, expected, None]
    assert [row.subject_ref for row in sealed.index_rows[:3]] == [
        bytes.fromhex(pseudonyms_of(PEPPER, e).sealing) for e in (alice, bob, business)
    ]
    assert group.encode() not in sealed.blob  # the header carries no group (the sealed envelopes do, encrypted)
    # rebuild-index makes its rows from the header: without the group, which the index merge then keeps.
    metas = read_header(sealed.blob)[2]
    rebuilt = index_row(
        metas[0], object_key=sealed.object_key, record_index=0, partition=3, classify=Classifier(POLICY), now=NOW
    )
    assert rebuilt.group_ref is None
    assert rebuilt._replace(group_ref=expected) == sealed.index_rows[0]


def test_a_missing_medium_carries_what_to_fetch_sealed_under_its_person_key() -> None:
    """What the media sweep retries is in the row sealed, never in the clear, and opens only for its message and
    person with their key."""
    photo = event(type_="image", payload={"type": "image", "image": {"id": "m1"}})
    ref = MediaRef("1234567890", "image/jpeg", "c2hhMjU2")
    [job] = seal(photo, media={photo.event_id: ref}).media
    target = job.target
    row = media_row(job, MediaResult("1234567890", None, 1, "http 500"))
    assert row.retry_ref is not None
    assert b"1234567890" not in row.retry_ref
    retry = open_media_retry(row.retry_ref, target.dek, event_id=photo.event_id, sealing=target.sealing)
    assert (retry.ref, retry.timestamp, retry.received_at) == (ref, target.timestamp, target.received_at)
    with pytest.raises(RecordTampered):
        open_media_retry(row.retry_ref, target.dek, event_id="0" * 32, sealing=target.sealing)
    with pytest.raises(RecordTampered):
        open_media_retry(
            row.retry_ref, CachedDek("other", os.urandom(32)), event_id=photo.event_id, sealing=target.sealing
        )
    assert media_row(job, MediaResult("1234567890", None, 1, None, 10)).retry_ref is None  # archived: nothing to retry
