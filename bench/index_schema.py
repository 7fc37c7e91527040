"""The index layouts side by side: PostgreSQL's CPU per archived event for each, measured in one run.

Each layout gets a scratch schema and the same work: ``--events`` rows written as the archiver writes them
(batches of ``--batch`` rows, each batch one transaction: COPY into a staging table, then one merge on the event
id so a replay never indexes an event twice), with realistic keys (2,000 people on 4 business numbers, a message
reference on three events in four, a quoted message on one in twenty).

- ``text_keys``: the layout of migrations 0001-0005 (hex ``text`` keys, B-trees on subject+time, message_ref,
  original_message_ref, object_key, phone_number_id+time).
- ``bytea_keys``: migration 0006 (``bytea`` keys, no index on message_ref, which no query uses).
- ``grouped``: one row per (object, person) carrying arrays of the events' fields, and a per-event dedup table
  (event id → group row and position): the design the issue asked to consider.

Prints, per layout: PostgreSQL's CPU µs per event (every postgres process: the backend, the WAL writer, the
checkpointer…), the client's, wall seconds and the bytes on disk per event (heap + indexes).

    python -m bench.index_schema [--events 200000] [--batch 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from bench.common import CpuMeter, demo_env, ensure_stack, write_result

TEXT_KEYS = """
CREATE TABLE events (
    event_id text PRIMARY KEY, subject_ref text, dek_id uuid, waba_id text, phone_number_id text,
    kind text NOT NULL, type text, message_ref text, original_message_ref text, event_time timestamptz,
    received_at timestamptz NOT NULL, object_key text NOT NULL, record_index integer NOT NULL,
    kafka_partition integer NOT NULL, kafka_offset bigint NOT NULL, retention_class text NOT NULL,
    expires_at timestamptz);
CREATE INDEX ON events (subject_ref, event_time);
CREATE INDEX ON events (message_ref);
CREATE INDEX ON events (original_message_ref) WHERE original_message_ref IS NOT NULL;
CREATE INDEX ON events (object_key);
CREATE INDEX ON events (phone_number_id, event_time);
"""

BYTEA_KEYS = (
    TEXT_KEYS.replace("event_id text", "event_id bytea")
    .replace("subject_ref text", "subject_ref bytea")
    .replace("message_ref text, original_message_ref text", "message_ref bytea, original_message_ref bytea")
    .replace("CREATE INDEX ON events (message_ref);\n", "")
)

GROUPED = """
CREATE TABLE event_groups (
    group_id bigserial PRIMARY KEY, object_key text NOT NULL, subject_ref bytea, dek_id uuid, waba_id text,
    phone_number_id text, first_time timestamptz, last_time timestamptz, kafka_partition integer NOT NULL,
    positions integer[] NOT NULL, kinds text[] NOT NULL, types text[] NOT NULL, event_times timestamptz[] NOT NULL,
    message_refs bytea[] NOT NULL, original_message_refs bytea[] NOT NULL, retention_classes text[] NOT NULL,
    expires_at timestamptz);
CREATE INDEX ON event_groups (subject_ref, first_time);
CREATE INDEX ON event_groups (object_key);
CREATE INDEX ON event_groups (phone_number_id, first_time);
CREATE INDEX ON event_groups USING gin (original_message_refs);
CREATE TABLE event_seen (event_id bytea PRIMARY KEY, group_id bigint NOT NULL, record_index integer NOT NULL);
"""

COLUMNS = (
    "event_id",
    "subject_ref",
    "dek_id",
    "waba_id",
    "phone_number_id",
    "kind",
    "type",
    "message_ref",
    "original_message_ref",
    "event_time",
    "received_at",
    "object_key",
    "record_index",
    "kafka_partition",
    "kafka_offset",
    "retention_class",
    "expires_at",
)

Row = tuple[Any, ...]


def batches(events: int, batch: int, seed: int = 7) -> list[list[Row]]:
    """The rows of ``events`` archived events in batches (keys as bytes; the text layout gets their hex)."""
    rng = random.Random(seed)
    people = [rng.randbytes(32) for _ in range(2000)]
    deks = [uuid.UUID(bytes=rng.randbytes(16)) for _ in people]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    out: list[list[Row]] = []
    for first in range(0, events, batch):
        partition = (first // batch) % 6
        key = f"bench/idx/events/{partition}/{first:020d}.waarc"
        rows: list[Row] = []
        for i in range(first, min(first + batch, events)):
            person = rng.randrange(len(people))
            when = start + timedelta(seconds=i)
            rows.append(
                (
                    rng.randbytes(16),
                    people[person],
                    deks[person],
                    f"10{person % 4}",
                    f"20{person % 4}",
                    "status" if i % 4 == 3 else "message",
                    "delivered" if i % 4 == 3 else "text",
                    rng.randbytes(32) if i % 4 != 3 else None,
                    rng.randbytes(32) if i % 20 == 0 else None,
                    when,
                    when,
                    key,
                    i - first,
                    partition,
                    i,
                    "default",
                    when + timedelta(days=365),
                )
            )
        out.append(rows)
    return out


def as_text(row: Row) -> Row:
    return tuple(v.hex() if isinstance(v, bytes) else v for v in row)


async def write_rows(conn: asyncpg.Connection, rows: Sequence[Row]) -> None:
    async with conn.transaction():
        await conn.copy_records_to_table("staged", records=rows, columns=list(COLUMNS))
        await conn.execute(
            f"INSERT INTO events ({', '.join(COLUMNS)}) "  # noqa: S608 — constant column names
            f"SELECT DISTINCT ON (event_id) {', '.join(COLUMNS)} FROM staged ORDER BY event_id, record_index DESC "
            "ON CONFLICT (event_id) DO UPDATE SET subject_ref = EXCLUDED.subject_ref, dek_id = EXCLUDED.dek_id,"
            " object_key = EXCLUDED.object_key, record_index = EXCLUDED.record_index,"
            " kafka_partition = EXCLUDED.kafka_partition, kafka_offset = EXCLUDED.kafka_offset"
        )


def grouped_rows(rows: Sequence[Row]) -> tuple[list[Row], list[tuple[bytes, int, int]]]:
    """One row per person of the batch (arrays in batch order) and the events (id, group number, position)."""
    groups: dict[bytes, list[Row]] = {}
    for row in rows:
        groups.setdefault(row[1], []).append(row)
    out: list[Row] = []
    seen: list[tuple[bytes, int, int]] = []
    for number, (person, members) in enumerate(groups.items()):
        first = members[0]
        out.append(
            (
                number,
                first[11],
                person,
                first[2],
                first[3],
                first[4],
                min(m[9] for m in members),
                max(m[9] for m in members),
                first[13],
                [m[12] for m in members],
                [m[5] for m in members],
                [m[6] for m in members],
                [m[9] for m in members],
                [m[7] or b"" for m in members],
                [m[8] or b"" for m in members],
                [m[15] for m in members],
                max(m[16] for m in members),
            )
        )
        seen.extend((m[0], number, m[12]) for m in members)
    return out, seen


GROUP_COLUMNS = (
    "batch_group",
    "object_key",
    "subject_ref",
    "dek_id",
    "waba_id",
    "phone_number_id",
    "first_time",
    "last_time",
    "kafka_partition",
    "positions",
    "kinds",
    "types",
    "event_times",
    "message_refs",
    "original_message_refs",
    "retention_classes",
    "expires_at",
)


async def write_grouped(conn: asyncpg.Connection, rows: Sequence[Row]) -> None:
    groups, seen = grouped_rows(rows)
    stored = ", ".join(GROUP_COLUMNS[1:])
    async with conn.transaction():
        await conn.copy_records_to_table("staged_groups", records=groups, columns=list(GROUP_COLUMNS))
        await conn.copy_records_to_table("staged_seen", records=seen, columns=["event_id", "batch_group", "position"])
        await conn.execute(
            f"WITH added AS (INSERT INTO event_groups ({stored}) SELECT {stored} FROM staged_groups "  # noqa: S608
            " ORDER BY batch_group RETURNING group_id, object_key, subject_ref) "
            "INSERT INTO event_seen (event_id, group_id, record_index) "
            "SELECT DISTINCT ON (s.event_id) s.event_id, a.group_id, s.position FROM staged_seen s "
            "JOIN staged_groups g USING (batch_group) JOIN added a ON a.subject_ref = g.subject_ref "
            "ORDER BY s.event_id, s.position DESC "
            "ON CONFLICT (event_id) DO UPDATE SET group_id = EXCLUDED.group_id, record_index = EXCLUDED.record_index"
        )


LAYOUTS: dict[str, tuple[str, str, Callable[[Row], Row]]] = {
    "text_keys": (TEXT_KEYS, "CREATE TEMP TABLE staged (LIKE events) ON COMMIT DELETE ROWS", as_text),
    "bytea_keys": (BYTEA_KEYS, "CREATE TEMP TABLE staged (LIKE events) ON COMMIT DELETE ROWS", lambda row: row),
    "grouped": (
        GROUPED,
        "CREATE TEMP TABLE staged_groups (batch_group integer, LIKE event_groups) ON COMMIT DELETE ROWS;"
        "ALTER TABLE staged_groups ALTER group_id DROP NOT NULL;"
        "CREATE TEMP TABLE staged_seen (event_id bytea, batch_group integer, position integer) ON COMMIT DELETE ROWS",
        lambda row: row,
    ),
}


async def measure(dsn: str, layout: str, data: list[list[Row]]) -> dict[str, Any]:
    ddl, staging, convert = LAYOUTS[layout]
    schema = f"bench_index_{layout}_{uuid.uuid4().hex[:6]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}; SET search_path = {schema}, public; {ddl}")
        await conn.execute(staging)
        prepared = [[convert(row) for row in rows] for rows in data]
        events = sum(len(rows) for rows in data)
        meter = CpuMeter({"client": os.getpid()})
        started = time.monotonic()
        for rows in prepared:
            if layout == "grouped":
                await write_grouped(conn, rows)
            else:
                await write_rows(conn, rows)
        elapsed = time.monotonic() - started
        meter.stop()
        cpu = meter.per_unit(events)["cpu_us_per_unit"]
        size = await conn.fetchval(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relkind = 'r'",
            schema,
        )
        return {
            "postgres_cpu_us_per_event": cpu["postgres"],
            "client_cpu_us_per_event": cpu["client"],
            "seconds": round(elapsed, 2),
            "bytes_per_event": round(int(size) / events),
        }
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def run(events: int, batch: int, rounds: int) -> dict[str, Any]:
    dsn = demo_env()["WA_MIGRATOR_PG__DSN"]  # it creates scratch schemas: the owner's login
    data = batches(events, batch)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in LAYOUTS}
    for _ in range(rounds):  # interleaved, so a noisy minute does not land on one layout only
        for name in LAYOUTS:
            results[name].append(await measure(dsn, name, data))
    summary = {
        name: {
            "postgres_cpu_us_per_event": [r["postgres_cpu_us_per_event"] for r in runs],
            "bytes_per_event": runs[-1]["bytes_per_event"],
            "seconds": [r["seconds"] for r in runs],
        }
        for name, runs in results.items()
    }
    base = min(summary["text_keys"]["postgres_cpu_us_per_event"])
    for figures in summary.values():
        figures["ratio_to_text_keys"] = round(min(figures["postgres_cpu_us_per_event"]) / base, 2)
    return {"events": events, "batch": batch, "rounds": rounds, "layouts": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ensure_stack()
    write_result("index_schema", asyncio.run(run(args.events, args.batch, args.rounds)))


if __name__ == "__main__":
    main()
