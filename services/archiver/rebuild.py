"""Rebuild the PostgreSQL index from the bucket alone (``wa-archive rebuild-index``).

Every object's plaintext header carries the pseudonymous metadata of its records, so the index rows and alias
links can be rebuilt without any key. Objects are applied oldest first: when replays left an event in two objects,
the newest object wins, as it did when the archiver wrote it. Records sealed with a key on the suppression list
(erased persons) are not indexed again. The retention class and expiry are recomputed from the current policy.

What the archiver derives from the content, and headers do not carry, needs the records opened: given
:class:`RecordKeys` (the keyring and the pepper, as the retention service holds them), each live record is
decrypted in memory and its group pseudonym, its keyword tokens and a number change it announces are restored too.
Nothing decrypted is written anywhere but as those pseudonyms and tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.archiver.sealing import record_time
from services.core.bucket import ArchiveBucket, StoredObject
from services.core.container import ContainerRecord, read_records
from services.core.crypto import RecordTampered, open_record
from services.core.events import EnvelopeError, Event
from services.core.holders import new_number, record_number_changes
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
from services.core.keyring import Keyring
from services.core.keywords import Tokenizer, keyword_key, searchable_text
from services.core.policy import Classifier, RetentionPolicy
from services.core.pseudonym import group_ref, subject_ref
from services.core.reader import object_header
from services.core.vocabulary import MEDIA_RECORD_KIND


@dataclass(frozen=True)
class RecordKeys:
    """What opening the records needs: the keyring (live keys only) and the pepper of the pseudonyms."""

    keyring: Keyring
    pepper: bytes


@dataclass(kw_only=True)
class RebuildReport:
    objects: int = 0
    events: int = 0
    media: int = 0
    skipped_shredded: int = 0
    unreadable_objects: int = 0
    # With RecordKeys: records opened, and those that could not be (a key gone meanwhile, bytes that fail
    # authentication, an envelope this version cannot read): they are indexed from their header alone.
    records_opened: int = 0
    records_unopened: int = 0
    keyword_rows: int = 0
    number_changes: int = 0


@dataclass
class _Opened:
    """What the records of one object say beyond their headers."""

    groups: dict[int, bytes]  # record position -> binary group pseudonym
    keywords: list[tuple[str, list[int]]]
    moves: list[tuple[str, datetime]]


class _Opener:
    def __init__(self, keys: RecordKeys) -> None:
        self.keys = keys
        self.tokenizer = Tokenizer(keyword_key(keys.pepper))
        self.aeads: dict[tuple[str, str], AESGCM | None] = {}

    async def _aead(self, subject: str, dek_id: str) -> AESGCM | None:
        if (subject, dek_id) not in self.aeads:
            dek = await self.keys.keyring.key_for_reading(subject, dek_id)
            self.aeads[(subject, dek_id)] = None if dek is None else dek.aead()
        return self.aeads[(subject, dek_id)]

    async def open(self, records: dict[int, ContainerRecord], now: datetime, report: RebuildReport) -> _Opened:
        pepper = self.keys.pepper
        opened = _Opened({}, [], [])
        texts: dict[str, list[str]] = {}
        for position, record in sorted(records.items()):
            meta = record.meta
            aead = await self._aead(meta.subject_ref, meta.dek_id)
            event: Event | None = None
            if aead is not None:
                try:
                    plain = open_record(record.sealed, aead, event_id=meta.event_id, subject_ref=meta.subject_ref)
                    event = Event.from_json(plain)
                except (RecordTampered, EnvelopeError):
                    event = None
            if event is None:
                report.records_unopened += 1
                continue
            report.records_opened += 1
            if event.group_id is not None:
                opened.groups[position] = bytes.fromhex(group_ref(pepper, event.group_id))
            searchable = searchable_text(event.kind, event.payload)
            if searchable:
                texts.setdefault(meta.subject_ref, []).extend(searchable)
            if new_number(event) is not None and event.subject is not None and event.subject.wa_id:
                first = subject_ref(pepper, event.phone_number_id or event.waba_id, event.subject.wa_id)
                opened.moves.append((first, record_time(event, now)))
        opened.keywords = [(ref, sorted(self.tokenizer.tokens(found))) for ref, found in sorted(texts.items())]
        return opened


async def rebuild_index(
    pool: asyncpg.Pool,
    bucket: ArchiveBucket,
    policy: RetentionPolicy,
    *,
    prefix: str,
    progress: Callable[[int, int], None] | None = None,
    keys: RecordKeys | None = None,
) -> RebuildReport:
    report = RebuildReport()
    opener = _Opener(keys) if keys is not None else None
    classify = Classifier(policy)
    listed: list[StoredObject] = [obj async for obj in bucket.list_objects(prefix.rstrip("/") + "/")]
    listed.sort(key=lambda o: (o.last_modified, o.key))
    async with pool.acquire() as conn:
        shredded = {r["dek_id"] for r in await conn.fetch("SELECT dek_id::text AS dek_id FROM shredded_keys")}
    for done, stored in enumerate(listed, start=1):
        try:
            # A streamed media object (format version 3) is verified as it is read, never held whole.
            (source, _created, metas), blob = await object_header(bucket, stored.key)
        except ValueError:
            report.unreadable_objects += 1
            continue
        now = datetime.now(UTC)
        live = [i for i, meta in enumerate(metas) if meta.dek_id not in shredded and meta.kind != MEDIA_RECORD_KIND]
        opened = (
            await opener.open(read_records(blob, live, verify_trailer=False), now, report)
            if opener is not None and live and blob is not None
            else _Opened({}, [], [])
        )
        rows: list[IndexRow] = []
        media: list[MediaRow] = []
        aliases: set[tuple[str, str]] = set()
        for position, meta in enumerate(metas):
            if meta.dek_id in shredded:
                report.skipped_shredded += 1
            elif meta.kind == MEDIA_RECORD_KIND:
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
                        group_ref=opened.groups.get(position),
                    )
                )
                aliases.update(alias_rows(meta))
        async with pool.acquire() as conn, conn.transaction():
            if rows:
                await write_object_index(
                    conn,
                    ObjectRow(
                        object_key=stored.key,
                        topic=source.topic,
                        kafka_partition=source.partition,
                        first_offset=source.first_offset,
                        last_offset=source.last_offset,
                        record_count=len(metas),
                        size_bytes=stored.size,
                        retain_until=None,
                    ),
                    rows,
                    aliases,
                    keywords=opened.keywords,
                )
            if media:
                await write_media_rows(conn, media)
            await record_number_changes(conn, opened.moves)
        report.keyword_rows += len(opened.keywords)
        report.number_changes += len(opened.moves)
        report.objects += 1
        report.events += len(rows)
        report.media += len(media)
        if progress is not None:
            progress(done, len(listed))
    return report
