"""The archiver's decisions, without I/O: Kafka records in; dead letters, sealed objects and index rows out.

- :func:`decode_record` turns a Kafka record into an :class:`Event`, or says why it can never be archived: not
  an envelope, or a field PostgreSQL (or a metric label) would refuse (:func:`unstorable`).
- :func:`pseudonyms_of` names the person a record belongs to: the pseudonym whose key seals it and one per
  identifier of that person; :func:`holders_of` takes numbers that changed hands into account.
- :func:`screen_erased` drops the records of people erased after the records happened (erasure is final).
- :func:`seal_batch` seals every record with its person's key and returns the batch object's bytes, its index
  rows, alias rows and the media to archive (where, under whose key): everything the writer must make durable,
  in one value. The media themselves stream through the writer (services/archiver/media_store.py);
  :func:`media_row` says what the index records of each.

The only thing here that is not a function of the inputs is AES-GCM's random nonce.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.archiver.media import MediaRef, MediaResult
from services.archiver.media_store import MediaTarget, usable_mime
from services.core.container import (
    OBJECT_SUFFIX,
    ContainerRecord,
    RecordMeta,
    SourceRange,
    encode_container,
    media_object_key,
    media_record_id,
    object_key,
)
from services.core.crypto import CachedDek, open_record, seal_record
from services.core.events import MAX_STORED_TEXT, Event, deep_enough, text_fault
from services.core.holders import holder_since, new_number, with_changes
from services.core.index import IndexRow, MediaRow, ObjectRow, alias_rows, event_time, index_row, received_time
from services.core.journal import (
    DLQ_REASON_HEADER,
    DLQ_SOURCE_HEADER,
    EVENT_FORMAT,
    FORMAT_HEADER,
    WEBHOOK_FORMAT,
    header_value,
    split_record,
)
from services.core.kafka import OutgoingRecord
from services.core.keywords import Tokenizer, keyword_key, searchable_text
from services.core.policy import Classifier
from services.core.pseudonym import group_ref, holder_ref, message_ref, subject_ref
from services.core.vocabulary import rfc3339_millis

# Subject of records that concern no customer (account updates, template status, value-level errors).
BUSINESS_SUBJECT = "~business"


@dataclass(frozen=True, slots=True, kw_only=True)
class RawRecord:
    """A Kafka record as buffered by the consumer: bytes only, decoded when its batch is written (memory)."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumedRecord:
    """One event of a Kafka record (``position`` in the record's body order), with the bytes sealed for it —
    its schema-1 envelope — or the reason it cannot be archived (a dead letter, ``event`` None).

    ``key``, ``value`` and ``headers`` are what a dead letter of it carries: for a record that could not be
    split, the record as consumed; for one event of a journaled webhook, the event's own envelope record."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    event: Event | None
    poison: str | None
    position: int = 0
    headers: tuple[tuple[str, bytes], ...] = ()


def unstorable(event: Event) -> str | None:
    """The first field of ``event`` that the index could not store as it is, with why; None if all can be.

    Only the fields copied into PostgreSQL as text are checked: every other identifier is pseudonymised (an
    HMAC, whatever its characters), and the payload is sealed as the exact bytes Kafka carried."""
    for name, value in (("waba_id", event.waba_id), ("phone_number_id", event.phone_number_id), ("type", event.type)):
        if value is not None:
            fault = text_fault(value)
            if fault is not None:
                return f"unstorable {name}: {fault}"
    return None


_EVENT_HEADERS: Final = ((FORMAT_HEADER, EVENT_FORMAT),)


def decode_record(raw: RawRecord) -> list[ConsumedRecord]:
    """The events of one Kafka record, in body order, each archivable or with its reason not to be. Never raises.

    An event envelope record (``event/1``) is sealed as the exact bytes Kafka carried; the events split from a
    journaled webhook (``webhook/1``) as their envelopes. A record that cannot be split is one dead letter,
    carried as it was consumed (its headers too, so it can be produced again once the cause is fixed); so is a
    record whose split fails in a way nobody foresaw, and an event that cannot be encoded again is a dead letter
    of its own, the record's other events archived."""
    try:
        with deep_enough():  # an envelope is encoded as deeply as ingest accepted its webhook
            return _decode_record(raw)
    except Exception as exc:  # a bug or an input nobody foresaw: this record alone, never the batch
        return [_undecodable(raw, f"unsplittable record: {type(exc).__name__}")]


def _undecodable(raw: RawRecord, reason: str) -> ConsumedRecord:
    return ConsumedRecord(
        partition=raw.partition,
        offset=raw.offset,
        timestamp_ms=raw.timestamp_ms,
        key=raw.key,
        value=raw.value or b"",
        event=None,
        poison=reason,
        position=0,
        headers=raw.headers,
    )


def _decode_record(raw: RawRecord) -> list[ConsumedRecord]:
    split = split_record(raw.value, raw.headers)
    if split.fault is not None:
        return [_undecodable(raw, split.fault)]
    whole = len(split.events) == 1 and header_value(raw.headers, FORMAT_HEADER) != WEBHOOK_FORMAT
    decoded: list[ConsumedRecord] = []
    for position, event in enumerate(split.events):
        fault = unstorable(event)
        if whole:
            key, value, headers = raw.key, raw.value or b"", raw.headers
        else:
            try:
                key, value, headers = event.key(), event.to_json(), _EVENT_HEADERS
            except Exception as exc:  # the event alone is dead-lettered, carrying the POST it came in
                key, value, headers = raw.key, raw.value or b"", raw.headers
                fault = f"unencodable event: {type(exc).__name__} (position {position})"
        decoded.append(
            ConsumedRecord(
                partition=raw.partition,
                offset=raw.offset,
                timestamp_ms=raw.timestamp_ms,
                key=key,
                value=value,
                event=None if fault else event,
                poison=fault,
                position=position,
                headers=headers,
            )
        )
    return decoded


def dead_letter(dlq_topic: str, topic: str, record: ConsumedRecord) -> OutgoingRecord:
    """The dead-letter record of ``record``: what it carries (key, value, headers: it can be produced again once
    the cause is fixed), the reason (at most 500 bytes, fixed words) and where it was read (topic/partition/offset)."""
    return OutgoingRecord(
        dlq_topic,
        record.key or b"",
        record.value,
        (
            *record.headers,
            (DLQ_REASON_HEADER, (record.poison or "unknown").encode()[:500]),
            (DLQ_SOURCE_HEADER, f"{topic}/{record.partition}/{record.offset}".encode()),
        ),
    )


@dataclass(frozen=True, slots=True)
class Pseudonyms:
    """Whose record it is: ``sealing`` names the key that seals it; ``aliases`` has one pseudonym per identifier
    of the person (wa_id, user_id, parent BSUID), empty for business records."""

    sealing: str
    aliases: tuple[str, ...]


def pseudonyms_of(
    pepper: bytes, event: Event, *, since: datetime | None = None, also: tuple[str, ...] = ()
) -> Pseudonyms:
    """The record's pseudonyms under its business number (or its WABA for account-level records).

    ``since`` is when the holder of the record's phone number got it, if it changed hands (services/core/holders.py;
    None: its first holder); ``also`` are more pseudonyms of the same person (the new number of a number change)."""
    scope = event.phone_number_id or event.waba_id
    person = event.subject
    refs = []
    if person is not None and person.wa_id:
        refs.append(holder_ref(pepper, scope, person.wa_id, since))
    if person is not None and person.user_id:
        refs.append(subject_ref(pepper, scope, person.user_id))
    if not refs:
        return Pseudonyms(subject_ref(pepper, scope, BUSINESS_SUBJECT), ())
    parent = parent_user_id(event)
    if parent is not None:
        refs.append(subject_ref(pepper, scope, parent))
    return Pseudonyms(refs[0], (*refs, *also))


def parent_user_id(event: Event) -> str | None:
    """The person's parent BSUID (``contacts[].parent_user_id``, one id across the business portfolio's
    businesses), when the webhook's contact entry for this person gives one: another identifier of theirs."""
    parent = event.contact.get("parent_user_id") if isinstance(event.contact, dict) else None
    return parent if isinstance(parent, str) and parent and len(parent) <= MAX_STORED_TEXT else None


def number_refs(owners: Sequence[Pseudonyms], events: Sequence[Event], pepper: bytes) -> set[str]:
    """The first pseudonyms of the batch's phone numbers (``owners`` as :func:`pseudonyms_of` gives them without
    ``since``), the numbers people moved to included: the ones whose changes of holder the batch needs."""
    refs = {owner.sealing for owner, event in zip(owners, events, strict=True) if event.subject and event.subject.wa_id}
    for event in events:
        moved_to = new_number(event)
        if moved_to is not None:
            refs.add(subject_ref(pepper, event.phone_number_id or event.waba_id, moved_to))
    return refs


def holders_of(
    pepper: bytes,
    events: Sequence[Event],
    owners: Sequence[Pseudonyms],
    known: Mapping[str, Sequence[datetime]],
    now: datetime,
) -> tuple[list[Pseudonyms], list[tuple[str, datetime]]]:
    """Each record's pseudonyms once numbers that changed hands are taken into account, and the batch's own number
    changes, (first pseudonym of the old number, moment), to keep.

    ``owners`` are the records' first-holder pseudonyms (:func:`pseudonyms_of` without ``since``) and ``known`` the
    changes already kept for the batch's numbers ({first pseudonym: moments, ascending}). A change in the batch
    applies to the batch's other records at once, in whatever order they came."""
    moves = [
        (owner.sealing, record_time(event, now), moved_to)
        for owner, event in zip(owners, events, strict=True)
        if (moved_to := new_number(event)) is not None
    ]
    if not moves and not known:
        return list(owners), []
    changes = with_changes(known, ((ref, at) for ref, at, _ in moves))
    found = list(owners)
    for i, event in enumerate(events):
        moved_to = new_number(event)
        first = owners[i].sealing if event.subject and event.subject.wa_id else None
        if first is None or (first not in changes and moved_to is None):
            continue
        at = record_time(event, now)
        also: tuple[str, ...] = ()
        if moved_to is not None:
            scope = event.phone_number_id or event.waba_id
            new_first = subject_ref(pepper, scope, moved_to)
            also = (holder_ref(pepper, scope, moved_to, holder_since(changes.get(new_first, ()), at)),)
        found[i] = pseudonyms_of(pepper, event, since=holder_since(changes.get(first, ()), at), also=also)
    return found, [(ref, at) for ref, at, _ in moves]


def people_of(owners: Iterable[Pseudonyms]) -> set[str]:
    """Every pseudonym of the batch's people: the ones an erasure may have been recorded under."""
    refs: set[str] = set()
    for owner in owners:
        refs.add(owner.sealing)
        refs.update(owner.aliases)
    return refs


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A record dropped because its person was erased after it happened: which event and whose, nothing else."""

    event_id: str
    subject_ref: str


def record_time(event: Event, now: datetime) -> datetime:
    """When the record happened: Meta's event time, else the receipt time (``now`` if that is unreadable)."""
    return event_time(event.timestamp) or received_time(event.received_at, now)


def screen_erased(
    records: Sequence[ConsumedRecord],
    owners: Sequence[Pseudonyms],
    erased: Mapping[str, datetime],
    now: datetime,
) -> tuple[list[ConsumedRecord], list[Pseudonyms], list[Tombstone]]:
    """Erasure is final: a record of a person erased (under any of their pseudonyms, ``erased`` = {ref: when})
    after the record happened is dropped — a tombstone instead of a sealed record, whether it comes from a
    batch that was being written, a replay of the topic or a Meta redelivery. Records that happened after the
    erasure (the person wrote again) are kept: new data, sealed under a new key. Meta's times are whole
    seconds, so a record of the erasure's very second counts as before it."""
    kept: list[ConsumedRecord] = []
    kept_owners: list[Pseudonyms] = []
    dropped: list[Tombstone] = []
    for record, owner in zip(records, owners, strict=True):
        event = record.event
        if event is None:
            raise ValueError(f"record at offset {record.offset} has no event (a dead letter)")
        times = [erased[ref] for ref in (owner.sealing, *owner.aliases) if ref in erased]
        if times and record_time(event, now) <= max(times):
            dropped.append(Tombstone(event.event_id, owner.sealing))
        else:
            kept.append(record)
            kept_owners.append(owner)
    return kept, kept_owners, dropped


@dataclass(frozen=True, slots=True)
class MediaJob:
    """A message's medium to archive: what to fetch (``ref``) and where it goes, under whose key (``target``)."""

    ref: MediaRef
    target: MediaTarget


@dataclass(slots=True, kw_only=True)
class SealedBatch:
    """What one batch must leave behind, durable, before its offsets are committed."""

    object_key: str
    blob: bytes
    object_row: ObjectRow
    index_rows: list[IndexRow]
    aliases: set[tuple[str, str]]
    keys_used: dict[str, str]  # subject_ref -> dek_id, confirmed live in the index transaction
    media: list[MediaJob] = field(default_factory=list)
    # (subject_ref, sorted keyword tokens) per person of the batch with searchable text (services/core/keywords.py)
    keywords: list[tuple[str, list[int]]] = field(default_factory=list)


def _meta(event: Event, owner: Pseudonyms, dek_id: str, offset: int, pepper: bytes) -> RecordMeta:
    return RecordMeta(
        event_id=event.event_id,
        subject_ref=owner.sealing,
        alias_refs=owner.aliases,
        dek_id=dek_id,
        kind=event.kind,
        type=event.type,
        timestamp=event.timestamp,
        received_at=event.received_at,
        waba_id=event.waba_id or None,
        phone_number_id=event.phone_number_id,
        message_ref=message_ref(pepper, event.message_id) if event.message_id else None,
        original_message_ref=message_ref(pepper, event.original_message_id) if event.original_message_id else None,
        offset=offset,
    )


def media_job(
    *,
    topic: str,
    partition: int,
    offset: int,
    event: Event,
    sealing: str,
    dek: CachedDek,
    ref: MediaRef,
    prefix: str,
    created_at: str,
) -> MediaJob:
    """The medium of ``event``, to be sealed with its person's key in an object of its own (format version 3)."""
    target = MediaTarget(
        event_id=event.event_id,
        record_id=media_record_id(event.event_id),
        object_key=media_object_key(prefix, event.event_id),
        sealing=sealing,
        dek=dek,
        source=SourceRange(topic, partition, offset, offset),
        created_at=created_at,
        timestamp=event.timestamp,
        received_at=event.received_at,
        waba_id=event.waba_id or None,
        phone_number_id=event.phone_number_id,
    )
    return MediaJob(ref, target)


RETRY_SUFFIX: Final = ".retry"


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaRetry:
    """What the media sweep needs to fetch a medium again, kept sealed in ``media_retry`` (no personal data in the
    clear: a media id, or the URL of a medium the business sent by ``link``, is a handle on the person's file)."""

    ref: MediaRef
    timestamp: int | None
    received_at: str | None

    def to_json(self) -> bytes:
        value: dict[str, object] = {
            "media_id": self.ref.media_id,
            "mime_type": self.ref.mime_type,
            "sha256": self.ref.sha256,
            "timestamp": self.timestamp,
            "received_at": self.received_at,
        }
        if self.ref.link is not None:
            # A medium the business sent by link is fetched from its URL again, with the same backoff and limits as
            # one fetched by media id (services/archiver/sweep.py).
            value["link"] = self.ref.link
        return orjson.dumps(value)

    @classmethod
    def from_json(cls, raw: bytes) -> MediaRetry:
        """Raises ValueError when ``raw`` is not what :meth:`to_json` writes."""
        value = orjson.loads(raw)
        if not isinstance(value, dict) or not isinstance(value.get("media_id"), str):
            raise ValueError("not a sealed media retry")
        mime, digest, when, received = (value.get(k) for k in ("mime_type", "sha256", "timestamp", "received_at"))
        link = value.get("link")
        return cls(
            ref=MediaRef(
                value["media_id"],
                mime if isinstance(mime, str) else None,
                digest if isinstance(digest, str) else None,
                link=link if isinstance(link, str) and link else None,
            ),
            timestamp=when if isinstance(when, int) and not isinstance(when, bool) else None,
            received_at=received if isinstance(received, str) else None,
        )


def seal_media_retry(target: MediaTarget, retry: MediaRetry) -> bytes:
    """``retry`` sealed with the message's person's key, bound to the message and the person (AES-GCM associated
    data: the event id with ``.retry``, the pseudonym)."""
    return seal_record(
        retry.to_json(), target.dek.aead(), event_id=target.event_id + RETRY_SUFFIX, subject_ref=target.sealing
    )


def open_media_retry(sealed: bytes, dek: CachedDek, *, event_id: str, sealing: str) -> MediaRetry:
    """The reverse of :func:`seal_media_retry`. Raises RecordTampered (altered, another message's or person's) and
    ValueError (not a media retry)."""
    return MediaRetry.from_json(open_record(sealed, dek.aead(), event_id=event_id + RETRY_SUFFIX, subject_ref=sealing))


def media_row(job: MediaJob, result: MediaResult) -> MediaRow:
    """The ``archived_media`` row of a job's outcome: ``archived`` with its object, or ``missing`` and why — with
    what to fetch again sealed in it (:func:`seal_media_retry`), for the media sweep."""
    target = job.target
    mime_type = usable_mime(result.mime_type or job.ref.mime_type)
    if not result.ok:
        retry = MediaRetry(ref=job.ref, timestamp=target.timestamp, received_at=target.received_at)
        return MediaRow(
            event_id=target.event_id,
            subject_ref=target.sealing,
            status="missing",
            object_key=None,
            mime_type=mime_type,
            size_bytes=None,
            attempts=result.attempts,
            failure=result.failure,
            retry_ref=seal_media_retry(target, retry),
        )
    return MediaRow(
        event_id=target.event_id,
        subject_ref=target.sealing,
        status="archived",
        object_key=target.object_key,
        mime_type=mime_type,
        size_bytes=result.size_bytes,
        attempts=result.attempts,
        failure=None,
    )


def batch_object_key(prefix: str, source: SourceRange, first_position: int) -> str:
    """The batch object's key: :func:`object_key` of its source range, with ``-{position:05d}`` before the suffix
    when the batch starts inside a journaled webhook (the poison isolation splits batches between the events of
    one Kafka record), so two objects never share a key."""
    key = object_key(prefix, source)
    if first_position == 0:
        return key
    return f"{key.removesuffix(OBJECT_SUFFIX)}-{first_position:05d}{OBJECT_SUFFIX}"


def seal_batch(
    records: Sequence[ConsumedRecord],
    owners: Sequence[Pseudonyms],
    keys: Mapping[str, CachedDek],
    *,
    topic: str,
    prefix: str,
    pepper: bytes,
    classify: Classifier,
    now: datetime,
    retain_until: datetime | None,
    media: Mapping[str, MediaRef] | None = None,
    tokenizer: Tokenizer | None = None,
) -> SealedBatch:
    """Seal ``records`` (decoded, of one partition, in offset order; ``owners[i]`` is record i's) into one
    batch object with its index rows. ``keys`` maps each sealing pseudonym to its data key. ``now`` stamps the
    object and stands in for unreadable receipt times; ``retain_until`` is the object's Object Lock date. ``media``
    maps a message's event id to the medium it refers to: each becomes a :class:`MediaJob` under its key."""
    if not records:
        raise ValueError("a batch object needs at least one record")
    partition = records[0].partition
    source = SourceRange(topic, partition, records[0].offset, records[-1].offset)
    key = batch_object_key(prefix, source, records[0].position)
    created_at = rfc3339_millis(now)
    container_records: list[ContainerRecord] = []
    index_rows: list[IndexRow] = []
    aliases: set[tuple[str, str]] = set()
    media_jobs: list[MediaJob] = []
    aeads: dict[str, AESGCM] = {}  # one AES-GCM object per person of the batch
    texts: dict[str, list[str]] = {}  # per person, the searchable texts of their records in this object
    groups: dict[str, bytes] = {}  # group id -> its binary pseudonym: one HMAC per group of the batch
    for position, (record, owner) in enumerate(zip(records, owners, strict=True)):
        event = record.event
        if event is None:
            raise ValueError(f"record at offset {record.offset} has no event (a dead letter)")
        dek = keys[owner.sealing]
        meta = _meta(event, owner, dek.dek_id, record.offset, pepper)
        aead = aeads.get(owner.sealing)
        if aead is None:
            aead = aeads[owner.sealing] = dek.aead()
        sealed = seal_record(record.value, aead, event_id=event.event_id, subject_ref=owner.sealing)
        container_records.append(ContainerRecord(meta=meta, sealed=sealed))
        group = event.group_id
        in_group: bytes | None = None
        if group is not None:
            in_group = groups.get(group)
            if in_group is None:
                in_group = groups[group] = bytes.fromhex(group_ref(pepper, group))
        index_rows.append(
            index_row(
                meta,
                object_key=key,
                record_index=position,
                partition=partition,
                classify=classify,
                now=now,
                group_ref=in_group,
            )
        )
        aliases.update(alias_rows(meta))
        searchable = searchable_text(event.kind, event.payload)
        if searchable:
            texts.setdefault(owner.sealing, []).extend(searchable)
        ref = (media or {}).get(event.event_id)
        if ref is not None:
            media_jobs.append(
                media_job(
                    topic=topic,
                    partition=partition,
                    offset=record.offset,
                    event=event,
                    sealing=owner.sealing,
                    dek=dek,
                    ref=ref,
                    prefix=prefix,
                    created_at=created_at,
                )
            )
    blob = encode_container(container_records, source=source, created_at=created_at)
    object_row = ObjectRow(
        object_key=key,
        topic=topic,
        kafka_partition=partition,
        first_offset=source.first_offset,
        last_offset=source.last_offset,
        record_count=len(records),
        size_bytes=len(blob),
        retain_until=retain_until,
    )
    keys_used = {owner.sealing: keys[owner.sealing].dek_id for owner in owners}
    keywords: list[tuple[str, list[int]]] = []
    if texts:
        tokenizer = tokenizer or Tokenizer(keyword_key(pepper))
        keywords = [(ref, sorted(tokenizer.tokens(person_texts))) for ref, person_texts in sorted(texts.items())]
    return SealedBatch(
        object_key=key,
        blob=blob,
        object_row=object_row,
        index_rows=index_rows,
        aliases=aliases,
        keys_used=keys_used,
        media=media_jobs,
        keywords=keywords,
    )
