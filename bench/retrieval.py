"""Retrieval: what the archive object format costs a reader, version 1 (JSON header) against version 2 (binary
columns), in the same run, each figure over several repeats (min / median).

Per object of 2,000 records, both versions of the very same records:
- the sha256 of the whole object, which every read below includes (the trailer is verified first);
- ``read_records`` of no record: what must be parsed and checked before any record can be located (v1: the whole
  JSON header; v2: the fixed part and the table sizes);
- ``read_header``: every entry decoded and checked, as ``rebuild-index`` does;
- ``read_records`` of 5 records, and of the ~220 records of one person (what a conversation read takes from
  each object).

End to end: opening a 10,000-message conversation (``load_conversation``: index lookup, audit row, object GETs,
verification, key unwrap, decryption, assembly) from a v1 archive and from a v2 archive, alternately, with the
wall-clock and the CPU time of this process (event loop and S3 client threads); and beside each, the GETs of the
same objects alone, the floor a whole-object reader cannot go below.

The archives are made with the archiver's own pieces (``seal_batch`` over decoded Kafka records, the keyring's
keys, ``write_object_index``), without Kafka: one partition of batch objects of 2,000 records in which every
ninth record is the conversation's, as in bench/retention.py (where the person's 10,000 messages share a partition
with 80,000 others'). The v1 archive holds the same kind of records re-encoded with ``version=1``, for a person
and events of its own (the index is keyed by event id). Objects, index rows and keys are removed at the end.

    python -m bench.retrieval [--repeats 7] [--messages 10000] [--others 80000] [--batch 2000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import io
import os
import pstats
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from bench.common import demo_env, ensure_stack, write_result
from devtools import pipeline
from services.actions.access import ArchiveAccess, open_access
from services.archiver.sealing import ConsumedRecord, pseudonyms_of, seal_batch
from services.core.container import decode_container, encode_container, read_header, read_records
from services.core.crypto import CachedDek
from services.core.events import Event, parse_webhook
from services.core.index import write_object_index
from services.core.policy import DEFAULT_POLICY, Classifier
from services.core.vocabulary import rfc3339_millis
from services.review.conversation import load_conversation

TOPIC = "wa.events.v1"
RECEIVED = datetime(2026, 11, 25, tzinfo=UTC)


def timings(call: Callable[[], object], repeats: int) -> dict[str, float]:
    """min and median of ``repeats`` calls, in milliseconds."""
    spent = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        spent.append((time.perf_counter() - started) * 1000)
    return {"min_ms": round(min(spent), 3), "median_ms": round(statistics.median(spent), 3)}


def events_for(focus: pipeline.Person, others: list[pipeline.Person], messages: int, other_count: int) -> list[Event]:
    """``messages`` text messages of ``focus`` spread evenly among ``other_count`` of other people, each with a
    receipt time of its own (as ingest stamps them, to the millisecond)."""
    total = messages + other_count
    every = max(total // messages, 1)
    start_ts = int(time.time()) - 86_400
    events: list[Event] = []
    mine = 0
    for i in range(total):
        person = focus if i % every == 0 and mine < messages else others[i % len(others)]
        mine += person is focus
        body = pipeline.text_message(
            person, f"wamid.RT{uuid.uuid4().hex}", f"message {i} about order {i % 997}", start_ts + i
        )
        received_at = rfc3339_millis(RECEIVED + timedelta(milliseconds=i))
        digest = hashlib.sha256(body).hexdigest()
        events.extend(parse_webhook(body, raw_sha256=digest, signature="sha256=bench", received_at=received_at))
    return events


@dataclass
class Archive:
    version: int
    focus: pipeline.Person
    focus_ref: str  # the pseudonym the conversation's records are sealed under
    object_keys: list[str]
    subject_refs: set[str]


async def build_archive(
    access: ArchiveAccess, prefix: str, version: int, messages: int, others: int, batch: int, people: int
) -> Archive:
    waba, number = pipeline.digits(15), pipeline.digits(15)
    focus = pipeline.Person(waba, number, "1" + pipeline.digits(10))
    crowd = [pipeline.Person(waba, number, f"1{i:010d}") for i in range(people)]
    events = events_for(focus, crowd, messages, others)
    # As the consumer decodes them: one event per Kafka record, sealed as the envelope bytes Kafka carried.
    records = [
        ConsumedRecord(
            partition=0, offset=offset, timestamp_ms=0, key=event.key(), value=event.to_json(), event=event, poison=None
        )
        for offset, event in enumerate(events)
    ]
    owners = [pseudonyms_of(access.pepper, event) for event in events]
    refs = {owner.sealing for owner in owners}
    keys = await access.keyring.keys_for_writing(refs)
    classify = Classifier(DEFAULT_POLICY)
    now = datetime.now(UTC)
    focus_ref = next(
        owner.sealing
        for owner, event in zip(owners, events, strict=True)
        if event.subject and event.subject.wa_id == focus.wa_id
    )
    archive = Archive(version, focus, focus_ref, [], refs)
    limit = asyncio.Semaphore(8)

    async def store(start: int) -> None:
        chunk, chunk_owners = records[start : start + batch], owners[start : start + batch]
        sealed = seal_batch(
            chunk,
            chunk_owners,
            keys,
            topic=TOPIC,
            prefix=prefix,
            pepper=access.pepper,
            classify=classify,
            now=now,
            retain_until=None,
        )
        blob, row = sealed.blob, sealed.object_row
        if version != 2:
            container = decode_container(blob)
            blob = encode_container(
                container.records, source=container.source, created_at=container.created_at, version=version
            )
            row = replace(row, size_bytes=len(blob))
        async with limit:
            await access.bucket.put(sealed.object_key, blob)
            async with access.pool.acquire() as conn, conn.transaction():
                await write_object_index(conn, row, sealed.index_rows, sealed.aliases)
        archive.object_keys.append(sealed.object_key)

    await asyncio.gather(*(store(start) for start in range(0, len(records), batch)))
    return archive


def sample_object(pepper: bytes, batch: int, people: int, every: int) -> tuple[bytes, bytes, str]:
    """One batch object of ``batch`` records as the archiver seals it (one record in ``every`` the person's), in
    version 2 and re-encoded in version 1, and the person's pseudonym: made first, in a fresh process, so that the
    per-object figures do not measure an allocator that has just built and dropped two archives."""
    waba, number = pipeline.digits(15), pipeline.digits(15)
    focus = pipeline.Person(waba, number, "1" + pipeline.digits(10))
    crowd = [pipeline.Person(waba, number, f"1{i:010d}") for i in range(people)]
    events = events_for(focus, crowd, batch // every, batch - batch // every)
    records = [
        ConsumedRecord(partition=0, offset=offset, timestamp_ms=0, key=e.key(), value=e.to_json(), event=e, poison=None)
        for offset, e in enumerate(events)
    ]
    owners = [pseudonyms_of(pepper, event) for event in events]
    keys = {owner.sealing: CachedDek(str(uuid.uuid4()), os.urandom(32)) for owner in owners}
    sealed = seal_batch(
        records,
        owners,
        keys,
        topic=TOPIC,
        prefix="bench",
        pepper=pepper,
        classify=Classifier(DEFAULT_POLICY),
        now=datetime.now(UTC),
        retain_until=None,
    )
    container = decode_container(sealed.blob)
    v1 = encode_container(container.records, source=container.source, created_at=container.created_at, version=1)
    return v1, sealed.blob, pseudonyms_of(pepper, events[0]).sealing


async def remove(access: ArchiveAccess, prefix: str, archives: list[Archive]) -> None:
    keys = [key for archive in archives for key in archive.object_keys]
    for start in range(0, len(keys), 500):
        await access.bucket.delete_permanently(keys[start : start + 500])
    refs = sorted({ref for archive in archives for ref in archive.subject_refs})
    async with access.pool.acquire() as conn, conn.transaction():
        await conn.execute("DELETE FROM archived_events WHERE object_key LIKE $1", prefix + "/%")
        await conn.execute("DELETE FROM archive_objects WHERE object_key LIKE $1", prefix + "/%")
        await conn.execute("DELETE FROM subject_aliases WHERE subject_ref = ANY($1::text[])", refs)
        await conn.execute("DELETE FROM subject_keys WHERE subject_ref = ANY($1::text[])", refs)


def parse_figures(v1: bytes, v2: bytes, focus_ref: str, repeats: int) -> dict[str, Any]:
    """Per object, both versions of the same 2,000 records: the whole header, 5 records, and the records of one
    person (what a conversation read takes from each object); the sha256 of the object, which every one of these
    includes, beside them."""
    metas = read_header(v2)[2]
    count = len(metas)
    wanted = [0, count // 4, count // 2, 3 * count // 4, count - 1]
    mine = [index for index, meta in enumerate(metas) if meta.subject_ref == focus_ref]
    figures: dict[str, Any] = {"records_per_object": count, "conversation_records_per_object": len(mine)}
    for name, blob in (("v1", v1), ("v2", v2)):
        header_length = int.from_bytes(blob[7:11], "big")
        figures[name] = {
            "object_bytes": len(blob),
            "header_bytes": header_length,
            "sha256_of_object": timings(partial(hashlib.sha256, blob), repeats),
            "read_records_none": timings(partial(read_records, blob, []), repeats),
            "read_header": timings(partial(read_header, blob), repeats),
            "read_records_5": timings(partial(read_records, blob, wanted), repeats),
            "read_records_of_the_conversation": timings(partial(read_records, blob, mine), repeats),
        }
    return figures


async def open_conversation(access: ArchiveAccess, archive: Archive) -> tuple[float, float, int]:
    """Wall-clock and CPU seconds (this process: the event loop and the S3 client's threads) of one read."""
    started, cpu = time.perf_counter(), time.process_time()
    conversation = await load_conversation(
        access.pool,
        access.reader,
        access.pepper,
        contact=archive.focus.wa_id,
        phone_number_id=archive.focus.phone_number_id,
        actor="bench",
        reason="benchmark retrieval",
    )
    return time.perf_counter() - started, time.process_time() - cpu, len(conversation.messages)


async def fetch_only(access: ArchiveAccess, archive: Archive) -> tuple[float, float, int]:
    """The floor of a read: GET the same objects, as many at once as the reader does, and nothing else."""
    limit = asyncio.Semaphore(8)

    async def get(key: str) -> int:
        async with limit:
            return len(await access.bucket.get(key))

    started, cpu = time.perf_counter(), time.process_time()
    sizes = await asyncio.gather(*(get(key) for key in archive.object_keys))
    return time.perf_counter() - started, time.process_time() - cpu, sum(sizes)


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min_s": round(min(values), 3),
        "median_s": round(statistics.median(values), 3),
        "max_s": round(max(values), 3),
    }


async def run(repeats: int, messages: int, others: int, batch: int, people: int, profile: bool) -> dict[str, Any]:
    env = demo_env()
    prefix = f"bench/retrieval-{uuid.uuid4().hex[:8]}"
    # The synthetic archive is written as the archiver writes it and removed afterwards: no one service role may do
    # both (least privilege), so the bench does it as the schema's owner and the bucket's administrator. It is
    # read as the CLI reads it, with the retention service's role.
    owner = {
        **env,
        "WA_RETENTION_PG__DSN": env["WA_MIGRATOR_PG__DSN"],
        "WA_RETENTION_S3__ACCESS_KEY": env["WA_S3_ACCESS_KEY"],
        "WA_RETENTION_S3__SECRET_KEY": env["WA_S3_SECRET_KEY"],
    }
    writer = await open_access(pipeline.retention_settings(owner, prefix))
    figures: dict[str, Any] = {"messages": messages, "other_records": others, "batch": batch}
    archives: list[Archive] = []
    try:
        v1_blob, v2_blob, sample_ref = sample_object(writer.pepper, batch, people, (messages + others) // messages)
        figures["parse"] = parse_figures(v1_blob, v2_blob, sample_ref, max(repeats * 4, 20))
        del v1_blob, v2_blob
        started = time.monotonic()
        for version in (1, 2):
            archives.append(
                await build_archive(writer, f"{prefix}/v{version}", version, messages, others, batch, people)
            )
        figures["build_seconds"] = round(time.monotonic() - started, 1)
        figures["objects_per_archive"] = len(archives[0].object_keys)
        # A reader of its own: its key cache starts cold, as in a fresh CLI or retention process.
        reader = await open_access(pipeline.retention_settings(env, prefix))
        try:
            runs: dict[str, list[tuple[float, float, int]]] = {"v1": [], "v2": [], "v1_fetch": [], "v2_fetch": []}
            for archive in archives:  # warm-up: the first read pays the key unwraps and connection set-up
                await open_conversation(reader, archive)
            for repeat in range(repeats):
                order = archives if repeat % 2 == 0 else archives[::-1]
                for archive in order:
                    runs[f"v{archive.version}"].append(await open_conversation(reader, archive))
                    runs[f"v{archive.version}_fetch"].append(await fetch_only(reader, archive))
            figures["conversation"] = {
                name: {
                    "messages" if "fetch" not in name else "bytes": values[-1][2],
                    **spread([wall for wall, _cpu, _n in values]),
                    "cpu": spread([cpu for _wall, cpu, _n in values]),
                    "runs": [round(wall, 3) for wall, _cpu, _n in values],
                }
                for name, values in runs.items()
            }
            if profile:
                for archive in archives:
                    profiler = cProfile.Profile()
                    profiler.enable()
                    await open_conversation(reader, archive)
                    profiler.disable()
                    out = io.StringIO()
                    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
                    print(f"--- profile, v{archive.version} archive (event loop thread only) ---")
                    print(out.getvalue())
        finally:
            await reader.close()
    finally:
        await remove(writer, prefix, archives)
        await writer.close()
    figures["targets"] = {"retrieval_10k_s": 0.5}
    figures["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    return figures


def summary(figures: dict[str, Any]) -> str:
    parse = figures["parse"]

    def ms(version: str, name: str) -> str:
        value = parse[version][name]
        return f"{value['min_ms']:8.3f} / {value['median_ms']:8.3f}"

    conversation = figures["conversation"]
    lines = [
        f"per object of {parse['records_per_object']} records, min / median ms        v1                    v2",
        f"  header bytes {parse['v1']['header_bytes']:>45,} {parse['v2']['header_bytes']:>21,}",
        f"  sha256 of the object (in all below)    {ms('v1', 'sha256_of_object')}   {ms('v2', 'sha256_of_object')}",
        f"  read_records, no record (the header)   {ms('v1', 'read_records_none')}   {ms('v2', 'read_records_none')}",
        f"  read_header (every entry)              {ms('v1', 'read_header')}   {ms('v2', 'read_header')}",
        f"  read_records, 5 records                {ms('v1', 'read_records_5')}   {ms('v2', 'read_records_5')}",
        f"  read_records, the person's {parse['conversation_records_per_object']:<4} records"
        f"  {ms('v1', 'read_records_of_the_conversation')}   {ms('v2', 'read_records_of_the_conversation')}",
        f"conversation of {figures['messages']:,} messages in {figures['objects_per_archive']} objects, s "
        f"(min / median / max of {len(conversation['v1']['runs'])})",
    ]
    for name in ("v1", "v2", "v1_fetch", "v2_fetch"):
        c = conversation[name]
        what = f"{name[:2]}, the GETs alone" if "fetch" in name else f"{name}, load_conversation"
        lines.append(
            f"  {what:<24} wall {c['min_s']:.3f} / {c['median_s']:.3f} / {c['max_s']:.3f}"
            f"   cpu {c['cpu']['min_s']:.3f} / {c['cpu']['median_s']:.3f} / {c['cpu']['max_s']:.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--others", type=int, default=80_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--people", type=int, default=5_000, help="other people the other records belong to")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one read of each")
    args = parser.parse_args()
    ensure_stack()
    figures = asyncio.run(run(args.repeats, args.messages, args.others, args.batch, args.people, args.profile))
    write_result("retrieval", figures)
    print(summary(figures))


if __name__ == "__main__":
    main()
