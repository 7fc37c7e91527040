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
from services.core.index import (
    IndexRow,
    MediaRow,
    ObjectRow,
    alias_rows,
    archived_media_row,
    index_row,
    write_media_rows,
    write_object_index,
)
from services.core.policy import Classifier, RetentionPolicy


@dataclass
class RebuildReport:
    objects: int = 0
    events: int = 0
    media: int = 0
    skipped_shredded: int = 0
    unreadable_objects: int = 0


async def rebuild_index(
    pool: asyncpg.Pool,
    bucket: ArchiveBucket,
    policy: RetentionPolicy,
    *,
    prefix: str,
    progress: Callable[[int, int], None] | None = None,
) -> RebuildReport:
    report = RebuildReport()
    classify = Classifier(policy)
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
        now = datetime.now(UTC)
        rows: list[IndexRow] = []
        media: list[MediaRow] = []
        aliases: set[tuple[str, str]] = set()
        for position, meta in enumerate(metas):
            if meta.dek_id in shredded:
                report.skipped_shredded += 1
            elif meta.kind == "media":
                media.append(archived_media_row(meta, object_key=stored.key, size_bytes=None, attempts=1))
            else:
                rows.append(
                    index_row(
                        meta,
                        object_key=stored.key,
                        record_index=position,
                        partition=source.partition,
                        classify=classify,
                        now=now,
                    )
                )
                aliases.update(alias_rows(meta))
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
                await write_media_rows(conn, media)
        report.objects += 1
        report.events += len(rows)
        report.media += len(media)
        if progress is not None:
            progress(done, len(listed))
    return report
