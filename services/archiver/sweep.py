"""The media sweep: media whose download failed are tried again while Meta still holds them.

A medium that could not be archived with its message is recorded ``missing`` and queued in ``media_retry``
(services/core/index.py ``write_media_rows``; migration 0016), with nothing of it but the message's event id. Each
:meth:`MediaSweep.sweep` takes the due entries (leased, so two archivers never take the same one), and for each:

1. opens what to fetch — the media id, the webhook's checksum and MIME type, sealed in the entry with the
   message's person's key (migration 0020; the archiver never reads the archive back) — its message gone from the
   index, or its key shredded (erased): the entry is dropped;
2. asks the Graph API afresh (a download URL lives minutes) — or, for a medium the business sent by ``link``, its
   URL again, without a token — and streams the medium into its object, sealed under the message's key, exactly as
   the writer does (services/archiver/media_store.py), within the process's byte budget;
3. archived: the media row becomes ``archived`` and the entry leaves the queue, in one transaction that first
   checks the key is still live (an erasure that committed meanwhile wins: the row is not written);
   failed: the next attempt is scheduled (5 minutes doubling to 6 hours); past ``give_up_at`` (30 days after the
   first failure: Meta no longer holds the file) or for a failure no retry can change, the entry is given up —
   counted in ``wa_archiver_media_given_up_total`` (alert WaArchiverMediaGivenUp) and its row says why.

Contract of :meth:`MediaSweep.run`: never stops the archiver; an outage (PostgreSQL, S3) ends the sweep round
early and is retried the next round (the lease makes the entries due again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from services.archiver.media import MediaFetcher, MediaResult
from services.archiver.media_store import BucketMediaStore, MediaTarget
from services.archiver.metrics import ArchiverMetrics
from services.archiver.sealing import MediaJob, MediaRetry, media_row, open_media_retry
from services.core.bucket import ArchiveBucket, StorageRefused
from services.core.container import SourceRange, media_object_key, media_record_id
from services.core.crypto import RecordTampered
from services.core.index import FINAL_MEDIA_FAILURES, MediaRow, write_media_rows
from services.core.keyring import Keyring, KeyShredded
from services.core.vocabulary import rfc3339_millis
from services.evidence.chain import MEDIA_SWEEP_STREAM, Chain, Change

log = logging.getLogger("wa_archive.archiver")

FIRST_RETRY = timedelta(minutes=5)
LAST_RETRY = timedelta(hours=6)


def next_attempt(now: datetime, sweeps: int) -> datetime:
    """When to try again after ``sweeps`` failed sweeps: 5 minutes, doubling, at most 6 hours apart (pure)."""
    delay: timedelta = min(LAST_RETRY, FIRST_RETRY * 2 ** min(sweeps, 16))
    return now + delay


@dataclass(slots=True)
class SweepReport:
    archived: int = 0
    failed: int = 0
    given_up: int = 0
    dropped: int = 0  # the message is gone from the index, or its person was erased


@dataclass(frozen=True, slots=True, kw_only=True)
class _Due:
    event_id: str
    sweeps: int
    give_up_at: datetime
    sealed_ref: bytes | None
    subject_ref: str
    dek_id: str
    waba_id: str | None
    phone_number_id: str | None
    topic: str
    partition: int
    offset: int


class MediaSweep:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        bucket: ArchiveBucket,
        keyring: Keyring,
        fetcher: MediaFetcher,
        metrics: ArchiverMetrics,
        chunk_bytes: int,
        part_bytes: int,
        batch: int = 10,
        lease: timedelta = timedelta(minutes=15),
        chain: Chain | None = None,
    ) -> None:
        self.pool, self.bucket, self.keyring, self.fetcher, self.metrics = pool, bucket, keyring, fetcher, metrics
        self.chunk_bytes, self.part_bytes = chunk_bytes, part_bytes
        self.batch, self.lease = batch, lease
        self.chain = chain  # each medium archived enters the hash chain (services/evidence/chain.py)

    async def run(self, stop: asyncio.Event, *, interval_s: float) -> None:
        """Sweep every ``interval_s`` until ``stop`` is set (see the module docstring)."""
        while not stop.is_set():
            try:
                report = await self.sweep(datetime.now(UTC))
                if report.archived or report.given_up:
                    log.info("media sweep: %s", report)
            except Exception as exc:  # an outage: the leased entries come due again
                log.warning("media sweep round failed (%s); retrying next round", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    async def sweep(self, now: datetime) -> SweepReport:
        """One round: every entry due at ``now`` (at most ``batch``), leased, tried once."""
        report = SweepReport()
        for due in await self._take_due(now):
            try:
                outcome = await self._retry(due, now)
            except Exception as exc:  # an outage, or an object that does not verify: its lease brings it back
                log.warning("media sweep could not retry an entry (%s)", type(exc).__name__)
                outcome = "failed"
            setattr(report, outcome, getattr(report, outcome) + 1)
            self.metrics.media_retries.labels(outcome).inc()
        self.metrics.media_retry_pending.set(await self.pool.fetchval("SELECT count(*) FROM media_retry"))
        return report

    async def _take_due(self, now: datetime) -> list[_Due]:
        """Lease the due entries of this archive (its bucket prefix), their next attempt moved past the lease, with
        what retrying them needs. Entries whose message left the index (retention, erasure) are dropped first."""
        await self.pool.execute(
            "DELETE FROM media_retry r WHERE NOT EXISTS (SELECT 1 FROM archived_events e WHERE e.event_id = r.event_id)"
        )
        rows = await self.pool.fetch(
            "WITH due AS (SELECT r.event_id FROM media_retry r JOIN archived_events e ON e.event_id = r.event_id"
            " WHERE r.next_attempt_at <= $1 AND starts_with(e.object_key, $4) ORDER BY r.next_attempt_at"
            " LIMIT $2 FOR UPDATE OF r SKIP LOCKED),"
            " leased AS (UPDATE media_retry r SET next_attempt_at = $1 + $3::interval FROM due"
            " WHERE r.event_id = due.event_id RETURNING r.event_id, r.sweeps, r.give_up_at, r.sealed_ref)"
            " SELECT encode(l.event_id, 'hex') AS event_id, l.sweeps, l.give_up_at, l.sealed_ref,"
            " encode(e.subject_ref, 'hex') AS subject_ref, e.dek_id::text AS dek_id, e.waba_id, e.phone_number_id,"
            " o.topic, e.kafka_partition, e.kafka_offset"
            " FROM leased l JOIN archived_events e ON e.event_id = l.event_id"
            " JOIN archive_objects o ON o.object_key = e.object_key",
            now,
            self.batch,
            self.lease,
            self.bucket.settings.prefix + "/",
        )
        return [
            _Due(
                event_id=row["event_id"],
                sweeps=row["sweeps"],
                give_up_at=row["give_up_at"],
                sealed_ref=row["sealed_ref"],
                subject_ref=row["subject_ref"],
                dek_id=row["dek_id"],
                waba_id=row["waba_id"],
                phone_number_id=row["phone_number_id"],
                topic=row["topic"],
                partition=row["kafka_partition"],
                offset=row["kafka_offset"],
            )
            for row in rows
        ]

    async def _retry(self, due: _Due, now: datetime) -> str:
        """Try one entry once; returns the outcome (a :class:`SweepReport` field)."""
        dek = await self.keyring.key_for_reading(due.subject_ref, due.dek_id)
        if dek is None or due.sealed_ref is None:
            await self._drop(due.event_id)  # erased: nothing of the person is fetched again
            return "dropped"
        try:
            retry: MediaRetry = open_media_retry(due.sealed_ref, dek, event_id=due.event_id, sealing=due.subject_ref)
        except (RecordTampered, ValueError):
            await self._drop(due.event_id)
            return "dropped"
        ref = retry.ref
        target = MediaTarget(
            event_id=due.event_id,
            record_id=media_record_id(due.event_id),
            object_key=media_object_key(self.bucket.settings.prefix, due.event_id),
            sealing=due.subject_ref,
            dek=dek,
            source=SourceRange(due.topic, due.partition, due.offset, due.offset),
            created_at=rfc3339_millis(now),
            timestamp=retry.timestamp,
            received_at=retry.received_at,
            waba_id=due.waba_id,
            phone_number_id=due.phone_number_id,
        )
        job = MediaJob(ref, target)
        store = BucketMediaStore(
            bucket=self.bucket, target=job.target, chunk_bytes=self.chunk_bytes, part_bytes=self.part_bytes, now=now
        )
        try:
            result = await self.fetcher.fetch(ref, store)
        except StorageRefused:
            result = MediaResult(ref.media_id, ref.mime_type, 1, "s3 refused")
        row = media_row(job, result)
        if result.ok:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await self.keyring.confirm_live(conn, {due.subject_ref: due.dek_id}, {}, ())
                    digest = store.written.get(target.object_key)
                    if self.chain is not None and digest is not None:
                        await self.chain.append(conn, MEDIA_SWEEP_STREAM, Change(written=(digest,)), now=now)
                    await write_media_rows(conn, [row])
            except KeyShredded:
                await self._drop(due.event_id)
                return "dropped"
            self.metrics.media.labels("archived").inc()
            log.info("media archived by the sweep after %d earlier sweep(s)", due.sweeps)
            return "archived"
        failure = result.failure or "unknown"
        if failure in FINAL_MEDIA_FAILURES or now >= due.give_up_at:
            await self._give_up(row, failure, due.sweeps + 1)
            return "given_up"
        await self.pool.execute(
            "UPDATE media_retry SET sweeps = sweeps + 1, next_attempt_at = $2, last_failure = $3 WHERE event_id = $1",
            bytes.fromhex(due.event_id),
            next_attempt(now, due.sweeps + 1),
            failure,
        )
        return "failed"

    async def _give_up(self, row: MediaRow, failure: str, sweeps: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE archived_media SET failure = $2, attempts = attempts + $3"
                " WHERE event_id = $1 AND status = 'missing'",
                bytes.fromhex(row.event_id),
                f"given up: {failure}",
                row.attempts,
            )
            await conn.execute("DELETE FROM media_retry WHERE event_id = $1", bytes.fromhex(row.event_id))
        self.metrics.media_given_up.inc()
        log.warning("media given up after %d sweep(s): %s", sweeps, failure)

    async def _drop(self, event_id: str) -> None:
        await self.pool.execute("DELETE FROM media_retry WHERE event_id = $1", bytes.fromhex(event_id))
