"""Make one partition's batch durable: dead letters, media, the sealed batch object, then the index.

:meth:`BatchWriter.write` returns only when everything in the batch is durable — dead letters acknowledged by
the dead-letter topic, media objects and the batch object written to the bucket, the index rows committed — so
the caller may then commit ``last_offset + 1``. The decisions (what is poison, who owns a record, its sealing,
index rows and retention class) are the pure steps of :mod:`services.archiver.sealing`; this module does the I/O.

Failures follow the one retry policy (:mod:`services.core.retry`): outages are retried with capped exponential
backoff, never skipped; an erasure committed meanwhile screens the batch again at once (the person's records from
before it are dropped with a tombstone, never sealed again). When a store refuses the data itself (poison), the
batch is split in halves until the record that carries it is alone: that record goes to the dead-letter topic with
the reason, and every other record of the batch is archived.

An exception nobody classified (a bug, or a value no step foresaw) is retried ``unexpected_attempts`` times, then
isolated by halving like poison: the record that still fails alone goes to the dead-letter topic with the
exception's type as its reason, and the rest of the batch is archived. So that a failure that hits *every* record
(a bug in a release, a dependency failing in a way nobody classified) does not empty the topic into the
dead-letter topic, a record is blamed only while the writer has *blame credit*: one to start with, and one more
for each piece of work archived since (capped). Without credit the record is retried, with backoff, until
something else is archived or the process is stopped; the lag alerts call a person meanwhile.

A death that no exception reports (out of memory, killed) is handled by the in-flight ledger
(:mod:`services.archiver.inflight`): after a restart, the range that was in flight is written in smaller pieces, and
an event that was in flight alone at a second death is dead-lettered instead of killing the process again.

Cancellation (shutdown, revoke) stops the retries and leaves the offsets uncommitted, so the batch is consumed again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg

from services.archiver.held import held_sends_of, open_held_requests
from services.archiver.inflight import InflightLedger, Piece, Suspect, plan_pieces, residual
from services.archiver.media import MediaFetcher, MediaRef, MediaResult, media_ref, outbound_media_ref
from services.archiver.media_store import BucketMediaStore
from services.archiver.metrics import ArchiverMetrics
from services.archiver.sealing import (
    ConsumedRecord,
    MediaJob,
    Pseudonyms,
    RawRecord,
    SealedBatch,
    dead_letter,
    decode_record,
    holders_of,
    media_row,
    number_refs,
    parent_user_id,
    people_of,
    pseudonyms_of,
    screen_erased,
    seal_batch,
)
from services.core.bucket import ArchiveBucket, StorageRefused
from services.core.crypto import UnknownKek
from services.core.events import Event
from services.core.holders import number_changes, record_number_changes
from services.core.index import MediaRow, write_object_index, write_tombstones
from services.core.kafka import AckedProducer
from services.core.keyring import Keyring, KeyShredded
from services.core.keywords import Tokenizer, keyword_key
from services.core.policy import DEFAULT_POLICY, Classifier, RetentionPolicy
from services.core.retry import Attempt, Failure, RetryPolicy, classify, dependency_of
from services.core.vocabulary import WEBHOOK_MESSAGE_KINDS
from services.evidence.chain import Chain, Change, ObjectDigest, archive_stream

log = logging.getLogger("wa_archive.archiver")
T = TypeVar("T")

# Blame credit (see the module docstring): at most this many records blamed for unexpected failures in a row
# without anything archived in between. One to start: a process may meet a bad record before any good one.
MAX_BLAME_CREDIT = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteOutcome:
    archived: int
    dead_letters: int
    erased_dropped: int
    object_keys: tuple[str, ...]
    size_bytes: int
    attempts: int


@dataclass(frozen=True, slots=True)
class _Archived:
    object_key: str | None  # None: every record was dropped (erased people)
    size_bytes: int
    kept: Sequence[ConsumedRecord]
    erased_dropped: int


@dataclass(slots=True)
class _BatchMedia:
    """The media a batch's messages refer to (by the message's event id), and those already made durable by an
    earlier attempt at the batch, with the key that sealed them: a retry of the batch does not fetch them again."""

    refs: dict[str, MediaRef]
    done: dict[str, tuple[str, MediaRow, ObjectDigest | None]]  # event id -> (dek id, row, its object's digest)


@dataclass(slots=True)
class _Progress:
    archived: int = 0
    dead_letters: int = 0
    erased_dropped: int = 0
    size_bytes: int = 0
    attempts: int = 0


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
        media_chunk_bytes: int = 256 * 1024,
        media_part_bytes: int = 8 * 1024 * 1024,
        policy: RetentionPolicy = DEFAULT_POLICY,
        retry: RetryPolicy,
        max_concurrent_writes: int = 2,
        unexpected_attempts: int = 5,
        ledger: InflightLedger | None = None,
        crash_fan_out: int = 8,
        chain: Chain | None = None,
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
        self.media_chunk_bytes, self.media_part_bytes = media_chunk_bytes, media_part_bytes
        self.classify = Classifier(policy)
        self.retry = retry
        self.write_slots = asyncio.Semaphore(max_concurrent_writes)
        # Hot-path memo: a batch has few distinct people.
        self._owners: dict[tuple[str, str | None, str | None, str | None], Pseudonyms] = {}
        self.tokenizer = Tokenizer(keyword_key(pepper))  # the keyword tokens, remembered per word
        self.unexpected_attempts = max(1, unexpected_attempts)
        self.ledger = ledger
        self.crash_fan_out = crash_fan_out
        # The hash chain (services/evidence/chain.py): every object written enters it in the index transaction.
        self.chain = chain
        self._blame_credit = 1

    async def write(self, partition: int, raw: list[RawRecord]) -> WriteOutcome:
        """Make ``raw`` (records of ``partition``, in offset order) durable; see the module docstring.

        The writer takes ``raw`` over: the list is emptied once its records are decoded (the decoded records carry
        all a dead letter needs), so a write does not hold its batch twice, as consumed and as decoded."""
        async with self.write_slots:
            return await self._write(partition, raw)

    async def _write(self, partition: int, raw: list[RawRecord]) -> WriteOutcome:
        records = [record for r in raw for record in decode_record(r)]
        raw.clear()
        progress = _Progress()
        if self.ledger is None:
            keys = await self._write_records(records, progress)
        else:
            keys = await self._write_recorded(self.ledger, partition, records, progress)
        return WriteOutcome(
            archived=progress.archived,
            dead_letters=progress.dead_letters,
            erased_dropped=progress.erased_dropped,
            object_keys=tuple(keys),
            size_bytes=progress.size_bytes,
            attempts=progress.attempts,
        )

    async def _write_records(self, records: Sequence[ConsumedRecord], progress: _Progress) -> list[str]:
        """Dead-letter the records that cannot be split or stored, archive the others; the keys written."""
        poison = [r for r in records if r.event is None]
        good = [r for r in records if r.event is not None]
        if poison:
            await self._dead_letter(poison, progress)
        if not good:
            return []
        # Media stream into their objects while the batch is written (they need their person's key); a medium is
        # fetched once per batch (its failure is final after the fetcher's own attempts, and the sweep takes it
        # from there), and the batch object and index are retried until durable.
        media = self._media_of(good)
        return await self._archive_isolating(good, media, progress)

    async def _write_recorded(
        self, ledger: InflightLedger, partition: int, records: Sequence[ConsumedRecord], progress: _Progress
    ) -> list[str]:
        """:meth:`_write_records` under the in-flight ledger: each piece recorded before it is written, a range
        left in flight by a dead process written in smaller pieces (:func:`plan_pieces`)."""
        if not records:
            return []
        suspect: Suspect | None = await self._retrying(lambda: ledger.suspect(partition), progress)
        pieces = plan_pieces(records, suspect, fan_out=self.crash_fan_out)
        if suspect is not None and any(piece.deaths for piece in pieces):  # the suspect range is in this batch
            self.metrics.crash_isolations.inc()
            log.warning(
                "partition %d: a process died while writing offsets %d-%d (%d death(s)); writing them in %d pieces",
                partition,
                suspect.first[0],
                suspect.last[0],
                suspect.deaths,
                len(pieces),
            )
        keys: list[str] = []
        try:
            for piece in pieces:
                if piece.doomed:
                    (record,) = piece.items
                    reason = f"stopped the archiver: in flight at {piece.deaths} deaths"
                    log.error("partition %d offset %d: %s; dead-lettering it", partition, record.offset, reason)
                    await self._dead_letter([replace(record, event=None, poison=reason)], progress)
                    continue
                await self._mark(ledger, partition, piece, progress)
                keys += await self._write_records(piece.items, progress)
        except asyncio.CancelledError:
            await ledger.settle_cancelled(partition, suspect)
            raise
        remaining = residual(suspect, pieces[-1].last)
        await self._retrying(lambda: ledger.settle(partition, remaining), progress)
        return keys

    async def _mark(
        self, ledger: InflightLedger, partition: int, piece: Piece[ConsumedRecord], progress: _Progress
    ) -> None:
        await self._retrying(lambda: ledger.mark(partition, piece.first, piece.last, piece.deaths), progress)

    def _owner(self, event: Event) -> Pseudonyms:
        person = event.subject
        memo_key = (
            event.phone_number_id or event.waba_id,
            person.wa_id if person else None,
            person.user_id if person else None,
            parent_user_id(event),
        )
        found = self._owners.get(memo_key)
        if found is None:
            if len(self._owners) > 100_000:
                self._owners.clear()
            found = self._owners[memo_key] = pseudonyms_of(self.pepper, event)
        return found

    async def _retrying(
        self, step: Callable[[], Awaitable[T]], progress: _Progress, *, unexpected_attempts: int | None = None
    ) -> T:
        """``step`` under the retry policy: poison propagates at once, outages are retried until they end, and an
        unexpected failure is retried until ``unexpected_attempts`` tries failed that way (None: no limit)."""
        unexpected = 0

        async def attempt() -> T:
            progress.attempts += 1
            return await step()

        def retry_on(exc: Exception) -> bool:
            nonlocal unexpected
            failure = classify(exc)
            if failure is Failure.UNEXPECTED and not isinstance(exc, KeyShredded):
                unexpected += 1
                return unexpected_attempts is None or unexpected < unexpected_attempts
            return failure is not Failure.POISON

        return await self.retry.run(
            attempt,
            retry_on=retry_on,
            immediately=lambda exc: isinstance(exc, KeyShredded),
            on_retry=self._on_retry,
        )

    def _on_retry(self, attempt: Attempt) -> None:
        exc = attempt.error
        if isinstance(exc, KeyShredded):
            # Not an outage: an erasure committed meanwhile. Screen and seal again at once: the person's records
            # from before it are dropped, never sealed under a new key.
            log.info("an erasure committed during a batch, screening it again: %s", exc)
            self.metrics.retries.labels("keys").inc()
            return
        self.metrics.failed_flushes.inc()
        if isinstance(exc, UnknownKek):
            # An outage of a kind (services/core/retry.py): a person's key is wrapped by a KEK this archiver was
            # not given (removed from KEYS__KEKS before `wa-archive keys status` showed it empty). The batch waits,
            # uncommitted and never dead-lettered, until the KEK is configured; the message names the KEK id.
            self.metrics.retries.labels(dependency_of(exc)).inc()
            log.error("%s; retrying in %.1fs", exc, attempt.delay_s)
            return
        if classify(exc) is Failure.OUTAGE:
            label = dependency_of(exc)
            self.metrics.retries.labels(label).inc()
            log.warning("%s unavailable (%s); retrying in %.1fs", label, type(exc).__name__, attempt.delay_s)
            return
        # A bug or an unforeseen failure: the batch is neither skipped nor committed; it is retried, and the lag
        # and not-committing alerts call a person. The frames are logged, not the message, which could quote data.
        self.metrics.retries.labels("unexpected").inc()
        frames = "".join(traceback.format_tb(exc.__traceback__))
        log.error("unexpected %s writing a batch; retrying in %.1fs\n%s", type(exc).__name__, attempt.delay_s, frames)

    async def _archive_isolating(
        self,
        records: Sequence[ConsumedRecord],
        media_results: _BatchMedia,
        progress: _Progress,
        *,
        halved: bool = False,
    ) -> list[str]:
        """Archive ``records``; if a store refuses the data, or an unexpected failure outlasts its attempts, halve
        until the record at fault is alone, dead-letter it with the reason, and archive the others. Returns the
        keys of the objects written. Halves are tried once before they are halved again: the bounded retries of
        an unexpected failure are spent on the whole batch and on the single record."""
        attempts = 1 if halved and len(records) > 1 else self.unexpected_attempts
        while True:
            try:
                done = await self._retrying(
                    lambda: self._archive(records, media_results), progress, unexpected_attempts=attempts
                )
                break
            except Exception as exc:
                failure = classify(exc)
                if failure is Failure.OUTAGE:
                    raise  # not retryable any more: only a stop gets here
                if len(records) > 1:
                    middle = len(records) // 2
                    first = await self._archive_isolating(records[:middle], media_results, progress, halved=True)
                    rest = await self._archive_isolating(records[middle:], media_results, progress, halved=True)
                    return first + rest
                if failure is Failure.POISON:
                    reason = f"{dependency_of(exc)} refused: {type(exc).__name__}"
                    log.warning("the store refused a record (%s); sending it to the dead-letter topic", reason)
                elif self._blame_credit > 0:
                    self._blame_credit -= 1
                    reason = f"unexpected failure: {type(exc).__name__}"
                    log.error("a record failed alone %d time(s) (%s); dead-lettering it", attempts, reason)
                else:
                    # Nothing archived since the last record blamed: this may fail for every record. Keep trying
                    # (with backoff) rather than dead-letter on a guess; the lag alerts call a person.
                    log.error(
                        "a record failed alone (%s) and nothing was archived since the last one blamed;"
                        " retrying it instead of dead-lettering",
                        type(exc).__name__,
                    )
                    continue
                await self._dead_letter([replace(records[0], event=None, poison=reason)], progress)
                return []
        self._blame_credit = min(MAX_BLAME_CREDIT, self._blame_credit + 1)
        progress.archived += len(done.kept)
        progress.erased_dropped += done.erased_dropped
        progress.size_bytes += done.size_bytes
        for kind, count in Counter(r.event.kind for r in done.kept if r.event is not None).items():
            self.metrics.events_archived.labels(kind).inc(count)
        return [done.object_key] if done.object_key else []

    async def _dead_letter(self, poison: Sequence[ConsumedRecord], progress: _Progress) -> None:
        records = [dead_letter(self.dlq_topic, self.topic, r) for r in poison]
        await self._retrying(lambda: self.dlq.produce(records, deadline_s=30), progress)
        for r in poison:
            reason = (r.poison or "unknown").split(":", 1)[0]
            self.metrics.dead_letters.labels(reason).inc()
        progress.dead_letters += len(records)
        log.warning("sent %d record(s) to the dead-letter topic", len(records))

    def _media_of(self, records: Sequence[ConsumedRecord]) -> _BatchMedia:
        """The media the batch's messages refer to; they are fetched by :meth:`_put_media` under their keys."""
        refs: dict[str, MediaRef] = {}
        if self.media is None:
            return _BatchMedia(refs, {})
        for record in records:
            event = record.event
            assert event is not None
            if event.kind in WEBHOOK_MESSAGE_KINDS:
                ref = media_ref(event.type, event.payload)
            elif event.kind == "outbound":
                # What the business uploaded and sent by id (through the gateway or reported): fetched like any
                # medium, while Meta still holds it (30 days), and sealed under the person it was sent to.
                ref = outbound_media_ref(event.type, event.payload, event.message_id)
            else:
                ref = None
            if ref is not None:
                refs[event.event_id] = ref
        return _BatchMedia(refs, {})

    async def _put_media(
        self, jobs: Sequence[MediaJob], media: _BatchMedia, now: datetime
    ) -> list[tuple[MediaRow, ObjectDigest | None]]:
        """Stream each job's medium into its object, a few at once (within the fetcher's byte budget), and return
        their rows, each with the digest of the object written (None: none was). A medium that cannot be fetched,
        or whose object the store refuses, is a ``missing`` row: its message is archived all the same. A store
        outage raises (the batch is retried; the other downloads of this call are cancelled with it)."""
        fetcher = self.media
        if fetcher is None or not jobs:
            return []

        async def one(job: MediaJob) -> tuple[MediaRow, ObjectDigest | None]:
            target = job.target
            earlier = media.done.get(target.event_id)
            if earlier is not None and earlier[0] == target.dek.dek_id and earlier[1].subject_ref == target.sealing:
                return earlier[1], earlier[2]
            store = BucketMediaStore(
                bucket=self.bucket,
                target=target,
                chunk_bytes=self.media_chunk_bytes,
                part_bytes=self.media_part_bytes,
                now=now,
            )
            async with self.media_limit:
                try:
                    result = await fetcher.fetch(job.ref, store)
                except StorageRefused as exc:
                    result = MediaResult(job.ref.media_id, job.ref.mime_type, 1, "s3 refused")
                    log.warning("the store refused a media object (%s)", exc)
                except Exception as exc:
                    if classify(exc) is Failure.OUTAGE:
                        raise  # the batch is retried
                    # A bug or an unforeseen failure of the medium's upload: never its message's fault, so the
                    # message is archived and the medium marked missing (the sweep tries it again).
                    frames = "".join(traceback.format_tb(exc.__traceback__))
                    log.error("unexpected %s archiving a medium; marking it missing\n%s", type(exc).__name__, frames)
                    result = MediaResult(job.ref.media_id, job.ref.mime_type, 1, "unexpected error")
            if result.ok:
                self.metrics.media.labels("archived").inc()
            else:
                self.metrics.media.labels("missing").inc()
                self.metrics.media_failures.labels(result.failure or "unknown").inc()
                log.warning("media not archived after %d attempt(s): %s", result.attempts, result.failure)
            row = media_row(job, result)
            digest = store.written.get(target.object_key) if result.ok else None
            media.done[target.event_id] = (target.dek.dek_id, row, digest)
            return row, digest

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(one(job)) for job in jobs]
        except ExceptionGroup as failed:
            # The first failure as it was raised, so the retry policy classifies it (an S3 outage, not a bug).
            raise failed.exceptions[0] from None
        return [task.result() for task in tasks]

    async def _archive(self, records: Sequence[ConsumedRecord], media_results: _BatchMedia) -> _Archived:
        events = [r.event for r in records if r.event is not None]
        now = datetime.now(UTC)
        first_owners = [self._owner(event) for event in events]
        known = await number_changes(self.pool, number_refs(first_owners, events, self.pepper))
        owners, moves = holders_of(self.pepper, events, first_owners, known, now)
        people = people_of(owners)
        erased = await self.keyring.erasures(people)
        kept, kept_owners, tombstones = screen_erased(records, owners, erased, now) if erased else (records, owners, [])
        held = held_sends_of(
            [
                (r.event, owner.sealing if r.event.subject is not None else None)
                for r, owner in zip(kept, kept_owners, strict=True)
                if r.event is not None
            ]
        )
        sealed: SealedBatch | None = None
        media_rows: list[MediaRow] = []
        written: list[ObjectDigest] = []
        if kept:
            keys = await self.keyring.keys_for_writing({owner.sealing for owner in kept_owners})
            sealed = seal_batch(
                kept,
                kept_owners,
                keys,
                topic=self.topic,
                prefix=self.bucket.settings.prefix,
                pepper=self.pepper,
                classify=self.classify,
                now=now,
                retain_until=self.bucket.retain_until(now),
                media=media_results.refs,
                tokenizer=self.tokenizer,
            )
            media_done = await self._put_media(sealed.media, media_results, now)
            media_rows = [row for row, _ in media_done]
            written = [digest for _, digest in media_done if digest is not None]
            await self.bucket.put(sealed.object_key, sealed.blob, now=now)
            if self.chain is not None:
                written.append(ObjectDigest.of(sealed.object_key, sealed.blob))
        async with self.pool.acquire() as conn, conn.transaction():
            if sealed is not None:
                if self.chain is not None:
                    # First in the transaction: the stream's head row is locked until the index commits.
                    stream = archive_stream(self.topic, records[0].partition)
                    await self.chain.append(conn, stream, Change(written=tuple(written)), now=now)
                await self.keyring.confirm_live(conn, sealed.keys_used, erased, people)
                await write_object_index(
                    conn,
                    sealed.object_row,
                    sealed.index_rows,
                    sealed.aliases,
                    media_rows,
                    sealed.keywords,
                )
                if held:
                    # A held message's request exists exactly when its draft does (services/archiver/held.py).
                    await open_held_requests(conn, self.keyring, held)
            if tombstones:
                await write_tombstones(conn, [(t.event_id, t.subject_ref) for t in tombstones])
            if moves:
                await record_number_changes(conn, moves)
        if tombstones:
            self.metrics.erased_dropped.inc(len(tombstones))
            log.info("dropped %d record(s) of erased people from before their erasure", len(tombstones))
        stamp = time.time()
        self.metrics.batch_records.observe(len(records))
        self.metrics.batch_age.observe(max(0.0, stamp - records[0].timestamp_ms / 1000))
        self.metrics.last_flush.set(stamp)
        if sealed is None:
            return _Archived(None, 0, kept, len(tombstones))
        self.metrics.objects_written.inc()
        self.metrics.bytes_written.inc(len(sealed.blob))
        for phone_number_id in {row.phone_number_id for row in sealed.index_rows if row.phone_number_id}:
            self.metrics.last_success.labels(phone_number_id).set(stamp)
        return _Archived(sealed.object_key, len(sealed.blob), kept, len(tombstones))
