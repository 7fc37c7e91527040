"""Make one partition's batch durable: dead letters, media, the sealed batch object, then the index.

:meth:`BatchWriter.write` returns only when everything in the batch is durable — poison records acknowledged by
the dead-letter topic, media objects and the batch object written to the bucket, the index rows committed — so
the caller may then commit ``last_offset + 1``. Transient failures (S3, PostgreSQL, Kafka down; a key shredded
meanwhile) are retried with capped exponential backoff, never skipped; cancellation (shutdown, revoke) stops
the retries and leaves the offsets uncommitted, so the batch is consumed again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.archiver.media import MediaFetcher, MediaRef, MediaResult, media_ref
from services.archiver.metrics import ArchiverMetrics
from services.core.bucket import ArchiveBucket, StorageUnavailable
from services.core.container import ContainerRecord, RecordMeta, SourceRange, encode_container, object_key
from services.core.crypto import CachedDek, seal_record
from services.core.events import Event
from services.core.index import IndexRow, MediaRow, ObjectRow, write_object_index
from services.core.kafka import AckedProducer, OutgoingRecord, ProduceUnavailable
from services.core.keyring import Keyring, KeyShredded
from services.core.policy import DEFAULT_POLICY, RetentionPolicy
from services.core.pseudonym import message_ref, subject_ref

log = logging.getLogger("wa_archive.archiver")

# Subject of records that concern no customer (account updates, template status, value-level errors).
BUSINESS_SUBJECT = "~business"


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """A Kafka record with its decoded event, or the reason it cannot be archived (a dead letter)."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    event: Event | None
    poison: str | None


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A Kafka record as buffered by the consumer: bytes only, decoded when its batch is written (memory)."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


def decode_record(
    partition: int, offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None
) -> ConsumedRecord:
    if value is None:
        return ConsumedRecord(partition, offset, timestamp_ms, key, b"", None, "empty record")
    try:
        event = Event.from_json(value)
    except ValueError as exc:
        return ConsumedRecord(partition, offset, timestamp_ms, key, value, None, f"not an event envelope: {exc}")
    return ConsumedRecord(partition, offset, timestamp_ms, key, value, event, None)


@dataclass(frozen=True, slots=True)
class Subjects:
    primary: str
    aliases: tuple[str, ...]


def subjects_of(pepper: bytes, event: Event) -> Subjects:
    """The pseudonym whose key seals the event, and a pseudonym per identifier of the person (wa_id, user_id)."""
    scope = event.phone_number_id or event.waba_id
    ids = [i for i in ((event.subject.wa_id, event.subject.user_id) if event.subject else ()) if i]
    if not ids:
        return Subjects(subject_ref(pepper, scope, BUSINESS_SUBJECT), ())
    refs = tuple(subject_ref(pepper, scope, person) for person in ids)
    return Subjects(refs[0], refs)


def event_time(event: Event) -> datetime | None:
    if event.timestamp is None:
        return None
    try:
        return datetime.fromtimestamp(event.timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_received_at(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    archived: int
    dead_letters: int
    object_key: str | None
    size_bytes: int
    attempts: int


class BatchWriter:
    def __init__(
        self,
        *,
        topic: str,
        dlq_topic: str,
        bucket: ArchiveBucket,
        pool: asyncpg.Pool,
        keyring: Keyring,
        pepper: bytes,
        dlq: AckedProducer,
        metrics: ArchiverMetrics,
        media: MediaFetcher | None = None,
        media_concurrency: int = 8,
        policy: RetentionPolicy = DEFAULT_POLICY,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 10.0,
        max_concurrent_writes: int = 2,
    ) -> None:
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.bucket = bucket
        self.pool = pool
        self.keyring = keyring
        self.pepper = pepper
        self.dlq = dlq
        self.metrics = metrics
        self.media = media
        self.media_limit = asyncio.Semaphore(media_concurrency)
        self.policy = policy
        # Hot-path memo: a batch has few distinct people and (number, kind, type) triples.
        self._subjects: dict[tuple[str, str | None, str | None], Subjects] = {}
        self._classes: dict[tuple[str | None, str, str | None], tuple[str, timedelta]] = {}
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.write_slots = asyncio.Semaphore(max_concurrent_writes)

    async def write(self, partition: int, raw: Sequence[RawRecord]) -> WriteOutcome:
        async with self.write_slots:
            return await self._write(partition, raw)

    async def _write(self, partition: int, raw: Sequence[RawRecord]) -> WriteOutcome:
        records = [decode_record(r.partition, r.offset, r.timestamp_ms, r.key, r.value) for r in raw]
        poison = [r for r in records if r.event is None]
        good = [r for r in records if r.event is not None]
        attempts = 0
        if poison:
            attempts += await self._retry("kafka", lambda: self._dead_letter(poison))
        # Media are fetched once per batch (their failures are final after the fetcher's own attempts); the
        # batch object and index are retried until durable.
        media_results = await self._fetch_media(good)
        key: str | None = None
        size = 0
        if good:

            async def archive() -> None:
                nonlocal key, size
                key, size = await self._archive(partition, good, media_results)

            attempts += await self._retry("archive", archive)
        for kind, count in Counter(r.event.kind for r in good if r.event is not None).items():
            self.metrics.events_archived.labels(kind).inc(count)
        return WriteOutcome(len(good), len(poison), key, size, attempts)

    def _subjects_of(self, event: Event) -> Subjects:
        person = event.subject
        memo_key = (
            event.phone_number_id or event.waba_id,
            person.wa_id if person else None,
            person.user_id if person else None,
        )
        found = self._subjects.get(memo_key)
        if found is None:
            if len(self._subjects) > 100_000:
                self._subjects.clear()
            found = self._subjects[memo_key] = subjects_of(self.pepper, event)
        return found

    def _class_of(self, event: Event) -> tuple[str, timedelta]:
        memo_key = (event.phone_number_id, event.kind, event.type)
        found = self._classes.get(memo_key)
        if found is None:
            epoch = datetime(2000, 1, 1, tzinfo=UTC)
            name, expires = self.policy.classify(
                phone_number_id=event.phone_number_id, kind=event.kind, type_=event.type, event_time=epoch
            )
            if len(self._classes) > 10_000:
                self._classes.clear()
            found = self._classes[memo_key] = (name, expires - epoch)
        return found

    async def _retry(self, dependency: str, step: Callable[[], Awaitable[None]]) -> int:
        delay = self.retry_initial_s
        attempt = 0
        while True:
            attempt += 1
            try:
                await step()
                return attempt
            except KeyShredded as exc:
                # Not an outage: an erasure happened meanwhile. Seal again at once with fresh keys.
                log.info("re-sealing a batch: %s", exc)
                self.metrics.retries.labels("keys").inc()
                continue
            except (
                StorageUnavailable,
                ProduceUnavailable,
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
            ) as exc:
                label = _dependency_of(exc, dependency)
                self.metrics.retries.labels(label).inc()
                self.metrics.failed_flushes.inc()
                log.warning("%s unavailable (%s); retrying in %.1fs", label, type(exc).__name__, delay)
            except Exception as exc:
                # A bug or an unforeseen failure: the batch is neither skipped nor committed; it is retried, and
                # the lag and not-committing alerts call a person. The frames are logged, not the message,
                # which could quote data.
                self.metrics.retries.labels("unexpected").inc()
                self.metrics.failed_flushes.inc()
                frames = "".join(traceback.format_tb(exc.__traceback__))
                log.error("unexpected %s writing a batch; retrying in %.1fs\n%s", type(exc).__name__, delay, frames)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_s)

    async def _dead_letter(self, poison: Sequence[ConsumedRecord]) -> None:
        records = [
            OutgoingRecord(
                self.dlq_topic,
                r.key or b"",
                r.value,
                (
                    ("wa-dlq-reason", (r.poison or "unknown").encode()[:500]),
                    ("wa-source", f"{self.topic}/{r.partition}/{r.offset}".encode()),
                ),
            )
            for r in poison
        ]
        await self.dlq.produce(records, deadline_s=30)
        for r in poison:
            reason = (r.poison or "unknown").split(":", 1)[0]
            self.metrics.dead_letters.labels(reason).inc()
        log.warning("sent %d record(s) to the dead-letter topic", len(records))

    async def _fetch_media(self, records: Sequence[ConsumedRecord]) -> dict[str, tuple[MediaRef, MediaResult]]:
        if self.media is None:
            return {}
        fetcher = self.media
        wanted: list[tuple[str, MediaRef]] = []
        for record in records:
            event = record.event
            assert event is not None
            if event.kind in ("message", "echo", "history"):
                ref = media_ref(event.type, event.payload)
                if ref is not None:
                    wanted.append((event.event_id, ref))

        async def one(event_id: str, ref: MediaRef) -> tuple[str, tuple[MediaRef, MediaResult]]:
            async with self.media_limit:
                return event_id, (ref, await fetcher.fetch(ref))

        results = dict(await asyncio.gather(*(one(e, r) for e, r in wanted)))
        for _ref, result in results.values():
            if result.ok:
                self.metrics.media.labels("archived").inc()
            else:
                self.metrics.media.labels("missing").inc()
                self.metrics.media_failures.labels(result.failure or "unknown").inc()
                log.warning("media not archived after %d attempt(s): %s", result.attempts, result.failure)
        return results

    async def _archive(
        self,
        partition: int,
        records: Sequence[ConsumedRecord],
        media_results: dict[str, tuple[MediaRef, MediaResult]],
    ) -> tuple[str, int]:
        events = [r.event for r in records if r.event is not None]
        subjects = [self._subjects_of(e) for e in events]
        keys = await self.keyring.keys_for_writing({s.primary for s in subjects})
        now = datetime.now(UTC)
        created_at = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        source = SourceRange(self.topic, partition, records[0].offset, records[-1].offset)
        key = object_key(self.bucket.settings.prefix, source)

        container_records: list[ContainerRecord] = []
        index_rows: list[IndexRow] = []
        aliases: set[tuple[str, str]] = set()
        media_rows: list[MediaRow] = []
        aeads: dict[str, AESGCM] = {}  # one AES-GCM object per subject of the batch
        for position, (record, event, subject) in enumerate(zip(records, events, subjects, strict=True)):
            dek: CachedDek = keys[subject.primary]
            msg_ref = message_ref(self.pepper, event.message_id) if event.message_id else None
            original_ref = message_ref(self.pepper, event.original_message_id) if event.original_message_id else None
            meta = RecordMeta(
                event_id=event.event_id,
                subject_ref=subject.primary,
                alias_refs=subject.aliases,
                dek_id=dek.dek_id,
                kind=event.kind,
                type=event.type,
                timestamp=event.timestamp,
                received_at=event.received_at,
                waba_id=event.waba_id or None,
                phone_number_id=event.phone_number_id,
                message_ref=msg_ref,
                original_message_ref=original_ref,
                offset=record.offset,
            )
            aead = aeads.get(subject.primary)
            if aead is None:
                aead = aeads[subject.primary] = dek.aead()
            sealed = seal_record(record.value, aead, event_id=event.event_id, subject_ref=subject.primary)
            container_records.append(ContainerRecord(meta=meta, sealed=sealed))
            when = event_time(event) or parse_received_at(event.received_at)
            retention_class, keep_for = self._class_of(event)
            expires_at = when + keep_for
            index_rows.append(
                IndexRow(
                    event_id=event.event_id,
                    subject_ref=subject.primary,
                    dek_id=dek.dek_id,
                    waba_id=event.waba_id or None,
                    phone_number_id=event.phone_number_id,
                    kind=event.kind,
                    type=event.type,
                    message_ref=msg_ref,
                    original_message_ref=original_ref,
                    event_time=when,
                    received_at=parse_received_at(event.received_at),
                    object_key=key,
                    record_index=position,
                    kafka_partition=partition,
                    kafka_offset=record.offset,
                    retention_class=retention_class,
                    expires_at=expires_at,
                )
            )
            aliases.update((alias, subject.primary) for alias in subject.aliases or (subject.primary,))
            fetched = media_results.get(event.event_id)
            if fetched is not None:
                media_rows.append(await self._store_media(partition, record, event, subject.primary, dek, fetched))

        blob = encode_container(container_records, source=source, created_at=created_at)
        retain_until = await self.bucket.put(key, blob, now=now)
        used = {s.primary: keys[s.primary].dek_id for s in subjects}
        async with self.pool.acquire() as conn, conn.transaction():
            await self.keyring.confirm_live(conn, used)
            await write_object_index(
                conn,
                ObjectRow(
                    key,
                    self.topic,
                    partition,
                    source.first_offset,
                    source.last_offset,
                    len(records),
                    len(blob),
                    retain_until,
                ),
                index_rows,
                aliases,
                media_rows,
            )
        self.metrics.objects_written.inc()
        self.metrics.bytes_written.inc(len(blob))
        self.metrics.batch_records.observe(len(records))
        self.metrics.batch_age.observe(max(0.0, time.time() - records[0].timestamp_ms / 1000))
        stamp = time.time()
        for phone_number_id in {e.phone_number_id for e in events if e.phone_number_id}:
            self.metrics.last_success.labels(phone_number_id).set(stamp)
        self.metrics.last_flush.set(stamp)
        return key, len(blob)

    async def _store_media(
        self,
        partition: int,
        record: ConsumedRecord,
        event: Event,
        subject: str,
        dek: CachedDek,
        fetched: tuple[MediaRef, MediaResult],
    ) -> MediaRow:
        ref, result = fetched
        if not result.ok or result.data is None:
            return MediaRow(
                event.event_id, subject, "missing", None, ref.mime_type, None, result.attempts, result.failure
            )
        media_event_id = f"{event.event_id}.media"
        source = SourceRange(self.topic, partition, record.offset, record.offset)
        meta = RecordMeta(
            event_id=media_event_id,
            subject_ref=subject,
            alias_refs=(),
            dek_id=dek.dek_id,
            kind="media",
            type=result.mime_type or ref.mime_type,
            timestamp=event.timestamp,
            received_at=event.received_at,
            waba_id=event.waba_id or None,
            phone_number_id=event.phone_number_id,
            message_ref=None,
            original_message_ref=None,
            offset=record.offset,
        )
        sealed = seal_record(result.data, dek.aead(), event_id=media_event_id, subject_ref=subject)
        blob = encode_container(
            [ContainerRecord(meta=meta, sealed=sealed)],
            source=source,
            created_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        )
        key = f"{self.bucket.settings.prefix}/media/{event.event_id}.waarc"
        await self.bucket.put(key, blob)
        return MediaRow(
            event.event_id,
            subject,
            "archived",
            key,
            result.mime_type or ref.mime_type,
            len(result.data),
            result.attempts,
            None,
        )


def _dependency_of(exc: Exception, default: str) -> str:
    if isinstance(exc, StorageUnavailable):
        return "s3"
    if isinstance(exc, ProduceUnavailable):
        return "kafka"
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError):
        return "postgres"
    return default
