"""Rebuild the PostgreSQL index from the bucket alone (``wa-archive rebuild-index``).

Every object's plaintext header carries the pseudonymous metadata of its records, so the index can be rebuilt
without any key. Objects are applied oldest first: when replays left an event in two objects, the newest object
wins, as it did when the archiver wrote it. Records sealed with a key on the suppression list (erased persons)
are not indexed again. The retention class and expiry are recomputed from the current policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from services.core.bucket import ArchiveBucket, StoredObject
from services.core.container import read_header
from services.core.index import IndexRow, MediaRow, ObjectRow, write_object_index
from services.core.policy import RetentionPolicy


@dataclass
class RebuildReport:
    objects: int = 0
    events: int = 0
    media: int = 0
    skipped_shredded: int = 0
    unreadable_objects: int = 0


def _time(timestamp: int | None, received_at: str | None) -> datetime:
    if timestamp is not None:
        return datetime.fromtimestamp(timestamp, UTC)
    if received_at:
        return datetime.fromisoformat(received_at.replace("Z", "+00:00"))
    return datetime.now(UTC)


async def rebuild_index(
    pool: asyncpg.Pool,
    bucket: ArchiveBucket,
    policy: RetentionPolicy,
    *,
    prefix: str,
    progress: Callable[[int, int], None] | None = None,
) -> RebuildReport:
    report = RebuildReport()
    listed: list[StoredObject] = [obj async for obj in bucket.list_objects(prefix.rstrip("/") + "/")]
    listed.sort(key=lambda o: (o.last_modified, o.key))
    async with pool.acquire() as conn:
        shredded = {r["dek_id"] for r in await conn.fetch("SELECT dek_id::text AS dek_id FROM shredded_keys")}
    for done, stored in enumerate(listed, start=1):
        try:
            source, _created, metas = read_header(await bucket.get(stored.key))
        except ValueError:
            report.unreadable_objects += 1
            continue
        rows: list[IndexRow] = []
        media: list[MediaRow] = []
        aliases: set[tuple[str, str]] = set()
        for position, meta in enumerate(metas):
            if meta.dek_id in shredded:
                report.skipped_shredded += 1
                continue
            when = _time(meta.timestamp, meta.received_at)
            if meta.kind == "media":
                media.append(
                    MediaRow(
                        meta.event_id.removesuffix(".media"),
                        meta.subject_ref,
                        "archived",
                        stored.key,
                        meta.type,
                        None,
                        1,
                        None,
                    )
                )
                continue
            retention_class, expires_at = policy.classify(
                phone_number_id=meta.phone_number_id, kind=meta.kind, type_=meta.type, event_time=when
            )
            rows.append(
                IndexRow(
                    event_id=meta.event_id,
                    subject_ref=meta.subject_ref,
                    dek_id=meta.dek_id,
                    waba_id=meta.waba_id,
                    phone_number_id=meta.phone_number_id,
                    kind=meta.kind,
                    type=meta.type,
                    message_ref=meta.message_ref,
                    original_message_ref=meta.original_message_ref,
                    event_time=when,
                    received_at=_time(None, meta.received_at),
                    object_key=stored.key,
                    record_index=position,
                    kafka_partition=source.partition,
                    kafka_offset=meta.offset,
                    retention_class=retention_class,
                    expires_at=expires_at,
                )
            )
            aliases.update((alias, meta.subject_ref) for alias in meta.alias_refs or (meta.subject_ref,))
        async with pool.acquire() as conn, conn.transaction():
            if rows:
                await write_object_index(
                    conn,
                    ObjectRow(
                        stored.key,
                        source.topic,
                        source.partition,
                        source.first_offset,
                        source.last_offset,
                        len(metas),
                        stored.size,
                        None,
                    ),
                    rows,
                    aliases,
                )
            if media:
                await conn.executemany(
                    "INSERT INTO archived_media (event_id, subject_ref, status, object_key, mime_type, size_bytes,"
                    " attempts, failure) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO UPDATE"
                    " SET status = EXCLUDED.status, object_key = EXCLUDED.object_key",
                    [
                        (
                            m.event_id,
                            m.subject_ref,
                            m.status,
                            m.object_key,
                            m.mime_type,
                            m.size_bytes,
                            m.attempts,
                            m.failure,
                        )
                        for m in media
                    ],
                )
        report.objects += 1
        report.events += len(rows)
        report.media += len(media)
        if progress is not None:
            progress(done, len(listed))
    return report
