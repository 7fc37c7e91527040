"""Keyword search on a 1,000,000-message index (issue #25): p50/p95 of the most frequent words, as the DPO and as a
reader scoped to a case, through the action layer and through the console over HTTP.

The index lives in a database of its own on the running PostgreSQL (``--database``, ``wa_archive_bench_1m``),
created by the bench (as the server's superuser, over its local socket) and migrated like the archive's, never
the shared development database. It is built without the archiver, fast: the rows the archiver would write,
generated and COPYed in.

- ``--messages`` (1,000,000) text messages over ``--days`` (730) in arrival order, on five business numbers of
  unequal volume (40/25/15/12/8 %), from ``--people`` (20,000) people whose activity is skewed (the most active
  writes ~1,900 messages, the median ~20), in sessions (a few messages close together); one in twenty in one of
  300 Cloud API groups. 55 % are the person's (kind ``message``), 45 % the business's replies (``echo`` or
  ``outbound``), each of which gets a delivery status; one in a hundred of the person's is later deleted
  (``revoke``), one in a hundred edited (``edit``, with new words), three in a hundred are images with a caption.
- Each message is 5-15 words drawn with a Zipf distribution from its sender's language (60 % French, 40 % English:
  bench/console.py's vocabularies, ~2,300 words each), one in ten with an order number.
- The rows are exactly the archiver's: its pseudonyms (``subject_ref``, ``group_ref`` under the demo pepper), its
  object keys (``{prefix}/{topic}/{partition:05d}/{first_offset:020d}.waarc``, one partition per business number,
  2,000 records per object as the archiver's default batch) and its keyword tokens (``Tokenizer`` under
  ``keyword_key(pepper)`` over ``searchable_text`` of each payload, one row per object and person), so the search
  code runs unchanged over them.
- The big tables are UNLOGGED in this database only (the build writes no WAL for the shared server to archive;
  a crash empties them and the next run rebuilds), their secondary indexes dropped during the COPY and made again
  after it (the migrations' own definitions), then VACUUM ANALYZE (as autovacuum would have done).

A run reuses the index when its manifest (table ``bench_manifest``) has the same parameters and version and the
row counts match; migrations are applied every run, so an index a new migration adds is built on it.

Measured (each cell ``--queries`` searches, after three not counted): the most frequent words (the head of each
language's vocabulary), one word and two words (two frequent words one message holds together), as

- the DPO, unscoped (every business number) and on one business number;
- a reader whose scope is one open case with a few custodians (three people of different activity and a group)
  over its last year;

through ``Actions.search`` (the console's limit of hits) and ``POST /search`` of a console process, p50 / p95 /
max in ms, with the hits and the CPU per search of the measured process (the bench's, the console's); beside them
the case's saved searches as its reviewer runs them (one search per custodian) and the first 10,000 hits (the
admin API's most) of one word for the DPO and the reader. ``--explain`` adds EXPLAIN (ANALYZE, BUFFERS) of the
statements of one search per cell. Run from a worktree, WA_STACK_DIR names the stack's directory (its socket).

    python -m bench.search [--messages 1000000] [--queries 40] [--rebuild] [--explain] [--skip-http]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import bisect
import contextlib
import hashlib
import itertools
import os
import random
import secrets
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
from prometheus_client import CollectorRegistry

from bench.common import demo_env, ensure_stack, start_module, wait_http, write_result
from bench.console import (
    FRENCH_SHARE,
    ConsoleClient,
    Vocabulary,
    distribution,
    message_text,
    signed_in,
    vocabularies,
    vocabulary_digest,
)
from devtools import pipeline
from devtools.samples import REPO_ROOT
from devtools.serving import free_port
from services.actions.access import open_access
from services.actions.layer import Actions, Operator
from services.console.routers.search import SEARCH_LIMIT
from services.core.container import SourceRange, object_key
from services.core.index import INDEX_COLUMNS
from services.core.keywords import Tokenizer, keyword_key, searchable_text
from services.core.pseudonym import group_ref, subject_ref
from services.core.schema import migrate_dsn
from services.governance.cases import CustodianSpec
from services.governance.metrics import RetentionMetrics
from services.review.search import SearchFilter, search_index

MANIFEST_VERSION: Final = 1
DATABASE: Final = "wa_archive_bench_1m"
TOPIC: Final = "wa.events"
PREFIX: Final = "bench/search"
OBJECT_RECORDS: Final = 2_000  # the archiver's default batch (services/archiver/settings.py)
NUMBER_SHARES: Final = (0.40, 0.25, 0.15, 0.12, 0.08)
GROUPS: Final = 300
GROUP_SIZE: Final = 8
GROUP_SHARE: Final = 0.05
INBOUND_SHARE: Final = 0.55
DELETED_SHARE: Final = 0.01
EDITED_SHARE: Final = 0.01
IMAGE_SHARE: Final = 0.03
OPEN_SESSIONS: Final = 64
END: Final = datetime(2026, 12, 1, tzinfo=UTC)  # fixed, so that a rebuild gives the same archive
COPY_CHUNK: Final = 50_000
# The tables the build fills, made UNLOGGED in the bench database and loaded without their secondary indexes.
LOADED: Final = ("archived_events", "keyword_index", "archive_objects", "subject_aliases")


@dataclass(frozen=True)
class Plan:
    messages: int
    people: int
    days: int
    seed: int

    def phone_number_id(self, number: int) -> str:
        return f"55501510000{number}"

    def waba_id(self, number: int) -> str:
        return f"55511510000{number}"

    def wa_id(self, person: int) -> str:
        return f"1555{person:07d}"

    def group_id(self, group: int) -> str:
        return f"bench-search-group-{group:04d}"

    def language(self, person: int) -> str:
        return "fr" if (person * 2654435761 % 1000) < FRENCH_SHARE * 1000 else "en"


@dataclass
class Loaded:
    """What the build wrote, by table."""

    events: int = 0
    messages: int = 0
    keyword_rows: int = 0
    objects: int = 0
    aliases: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def _digest(*parts: object, size: int) -> bytes:
    return hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=size).digest()


@dataclass
class People:
    """Who belongs to which business number, their pseudonyms, keys and languages, and the groups."""

    number_of: list[int]
    refs: list[bytes]
    deks: list[uuid.UUID]
    cumulative: list[float]
    group_numbers: list[int]
    group_refs: list[bytes]
    group_members: list[list[int]]


def people(plan: Plan, pepper: bytes) -> People:
    rng = random.Random(f"{plan.seed}-people")
    numbers = list(range(len(NUMBER_SHARES)))
    number_of = rng.choices(numbers, weights=NUMBER_SHARES, k=plan.people)
    refs = [
        bytes.fromhex(subject_ref(pepper, plan.phone_number_id(number_of[p]), plan.wa_id(p)))
        for p in range(plan.people)
    ]
    deks = [uuid.UUID(bytes=_digest("dek", plan.seed, p, size=16)) for p in range(plan.people)]
    # Skewed activity: person p writes in proportion to 1 / (p + 100) (the first ~1,900 messages of 1,000,000, the
    # median ~20), shuffled so that activity does not follow the business number.
    order = list(range(plan.people))
    rng.shuffle(order)
    weights = [0.0] * plan.people
    for rank, person in enumerate(order):
        weights[person] = 1.0 / (rank + 100)
    by_number: dict[int, list[int]] = {}
    for person, number in enumerate(number_of):
        by_number.setdefault(number, []).append(person)
    group_numbers = rng.choices(numbers, weights=NUMBER_SHARES, k=GROUPS)
    members = [rng.sample(by_number[n], GROUP_SIZE) for n in group_numbers]
    return People(
        number_of=number_of,
        refs=refs,
        deks=deks,
        cumulative=list(itertools.accumulate(weights)),
        group_numbers=group_numbers,
        group_refs=[bytes.fromhex(group_ref(pepper, plan.group_id(g))) for g in range(GROUPS)],
        group_members=members,
    )


def by_activity(crowd: People) -> list[int]:
    """People from the most active down."""
    weights = [b - a for a, b in itertools.pairwise([0.0, *crowd.cumulative])]
    return sorted(range(len(weights)), key=lambda p: -weights[p])


@dataclass(frozen=True, slots=True)
class Event:
    """One archived event before it is placed in an object: its index fields and its payload's texts."""

    event_id: bytes
    person: int
    number: int
    kind: str
    type: str
    message_ref: bytes | None
    original_message_ref: bytes | None
    at: datetime
    group: int | None
    payload: dict[str, Any] | None


def _payload(kind: str, media: str, text: str) -> dict[str, Any]:
    body = {"body": text} if media == "text" else {"caption": text}
    message = {"type": media, media: body}
    return {"request": message} if kind == "outbound" else message


def events(plan: Plan, crowd: People, vocab: dict[str, Vocabulary]) -> Iterator[Event]:
    """Every event of the archive in arrival order (the same for the same plan)."""
    rng = random.Random(f"{plan.seed}-events")
    start = END - timedelta(days=plan.days)
    step = plan.days * 86_400 / plan.messages

    def session() -> list[int]:
        person = bisect.bisect_left(crowd.cumulative, rng.random() * crowd.cumulative[-1])
        return [min(person, plan.people - 1), 1 + int(rng.expovariate(1 / 3))]

    sessions = [session() for _ in range(OPEN_SESSIONS)]
    later: list[tuple[int, Event]] = []  # deletions and edits, due at a later position
    for position in range(plan.messages):
        while later and later[0][0] <= position:
            yield later.pop(0)[1]
        slot = rng.randrange(OPEN_SESSIONS)
        person, left = sessions[slot]
        sessions[slot] = session() if left <= 1 else [person, left - 1]
        group: int | None = None
        if rng.random() < GROUP_SHARE:
            group = rng.randrange(GROUPS)
            person = rng.choice(crowd.group_members[group])
        at = start + timedelta(seconds=position * step)
        inbound = group is not None or rng.random() < INBOUND_SHARE
        kind = "message" if inbound else rng.choice(("echo", "outbound"))
        media = "image" if rng.random() < IMAGE_SHARE else "text"
        language = vocab[plan.language(person)]
        ref = _digest("msg", plan.seed, position, size=32)
        yield Event(
            _digest("event", plan.seed, position, size=16),
            person,
            crowd.number_of[person],
            kind,
            media,
            ref,
            None,
            at,
            group,
            _payload(kind, media, message_text(rng, language)),
        )
        if not inbound:  # Meta's delivery status of what the business sent
            yield Event(
                _digest("status", plan.seed, position, size=16),
                person,
                crowd.number_of[person],
                "status",
                rng.choice(("delivered", "read")),
                ref,
                None,
                at + timedelta(seconds=2),
                None,
                None,
            )
        elif rng.random() < DELETED_SHARE + EDITED_SHARE:
            edit = rng.random() < EDITED_SHARE / (DELETED_SHARE + EDITED_SHARE)
            payload = (
                {"type": "edit", "edit": {"message": {"type": "text", "text": {"body": message_text(rng, language)}}}}
                if edit
                else None
            )
            due = position + rng.randint(1, 50)
            later.append(
                (
                    due,
                    Event(
                        _digest("later", plan.seed, position, size=16),
                        person,
                        crowd.number_of[person],
                        "message",
                        "edit" if edit else "revoke",
                        _digest("msg-later", plan.seed, position, size=32),
                        ref,
                        start + timedelta(seconds=due * step + 1),
                        group,
                        payload,
                    ),
                )
            )
            later.sort(key=lambda item: item[0])
    for _, event in later:
        yield event


def objects(plan: Plan, crowd: People, vocab: dict[str, Vocabulary]) -> Iterator[tuple[int, int, list[Event]]]:
    """(partition, first offset, events) of each object as the archiver would cut it: one partition per business
    number (ingest keys by it), OBJECT_RECORDS consecutive records each; the partially filled last ones at the
    end."""
    pending: dict[int, list[Event]] = {}
    offsets: dict[int, int] = {}
    for event in events(plan, crowd, vocab):
        batch = pending.setdefault(event.number, [])
        batch.append(event)
        if len(batch) == OBJECT_RECORDS:
            first = offsets.get(event.number, 0)
            yield event.number, first, batch
            offsets[event.number] = first + len(batch)
            pending[event.number] = []
    for number, batch in sorted(pending.items()):
        if batch:
            yield number, offsets.get(number, 0), batch


def object_rows(
    plan: Plan, crowd: People, tokenizer: Tokenizer, partition: int, first: int, batch: Sequence[Event]
) -> tuple[tuple[Any, ...], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The archive_objects row, the archived_events rows and the keyword_index rows of one object: the fields the
    archiver's index_row gives (services/core/index.py) and its keywords (services/archiver/sealing.py: the
    tokens of every searchable text of a person in the object)."""
    key = object_key(PREFIX, SourceRange(TOPIC, partition, first, first + len(batch) - 1))
    rows: list[tuple[Any, ...]] = []
    texts: dict[bytes, list[str]] = {}
    for index, event in enumerate(batch):
        number = event.number
        ref = crowd.refs[event.person]
        rows.append(
            (
                event.event_id,
                ref,
                crowd.deks[event.person],
                plan.waba_id(number),
                plan.phone_number_id(number),
                event.kind,
                event.type,
                event.message_ref,
                event.original_message_ref,
                event.at,
                event.at + timedelta(seconds=1),
                key,
                index,
                partition,
                first + index,
                "default",
                event.at + timedelta(days=5 * 365),
                False,
                crowd.group_refs[event.group] if event.group is not None else None,
            )
        )
        if event.payload is not None:
            found = searchable_text(event.kind, event.payload)
            if found:
                texts.setdefault(ref, []).extend(found)
    keywords = [(key, ref, sorted(tokenizer.tokens(person_texts))) for ref, person_texts in sorted(texts.items())]
    times = [e.at for e in batch]
    expires = max(times) + timedelta(days=5 * 365)
    obj = (key, TOPIC, partition, first, first + len(batch) - 1, len(batch), 2_000 * len(batch), None, expires)
    return obj, rows, keywords


# ---------------------------------------------------------------------------------------------------- the database
def stack_socket() -> Path:
    """The local stack's PostgreSQL socket directory (deploy/local/stack.sh: ``$WA_STACK_DIR/postgres/run``)."""
    stack = Path(os.environ.get("WA_STACK_DIR") or REPO_ROOT / ".stack")
    return stack / "postgres" / "run"


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def ensure_database(env: dict[str, str], database: str) -> bool:
    """Create ``database`` (owned by the archive's owner) unless it exists: as the server's superuser over the
    stack's local socket (trust), the one login that may. Returns whether it was created."""
    socket = stack_socket()
    if not socket.exists():
        raise SystemExit(
            f"no PostgreSQL socket at {socket}: set WA_STACK_DIR to the stack's directory (deploy/local/stack.sh)"
        )
    conn = await asyncpg.connect(host=str(socket), port=int(env["WA_PG_PORT"]), user="postgres", database="postgres")
    try:
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            return False
        await conn.execute(f'CREATE DATABASE "{database}" OWNER "{env["WA_PG_USER"]}"')
        return True
    finally:
        await conn.close()


MANIFEST_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS bench_manifest (id int PRIMARY KEY DEFAULT 1 CHECK (id = 1), params jsonb NOT NULL,"
    " figures jsonb NOT NULL, built_at timestamptz NOT NULL DEFAULT now())"
)


async def reusable(conn: asyncpg.Connection, params: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    await conn.execute(MANIFEST_TABLE)
    row = await conn.fetchrow("SELECT params::text AS params, figures::text AS figures FROM bench_manifest")
    if row is None:
        return None, "no index built yet"
    if orjson.loads(row["params"]) != params:
        return None, "built with other parameters"
    figures: dict[str, Any] = orjson.loads(row["figures"])
    events = await conn.fetchval("SELECT count(*) FROM archived_events")
    keywords = await conn.fetchval("SELECT count(*) FROM keyword_index")
    if events != figures["events"] or keywords != figures["keyword_rows"]:
        return None, f"incomplete ({events:,} events, {keywords:,} keyword rows)"
    return figures, "reused"


async def secondary_indexes(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """(name, definition) of the loaded tables' indexes that back no constraint."""
    rows = await conn.fetch(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public' AND i.tablename = ANY($1)"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
        list(LOADED),
    )
    return [(r["indexname"], r["indexdef"]) for r in rows]


async def build(conn: asyncpg.Connection, plan: Plan, pepper: bytes, params: dict[str, Any]) -> dict[str, Any]:
    began = time.monotonic()
    vocab = vocabularies(plan.seed)
    crowd = people(plan, pepper)
    for table in LOADED:
        await conn.execute(f"TRUNCATE {table}")  # this database's own tables, never the shared ones
        await conn.execute(f"ALTER TABLE {table} SET UNLOGGED")
    await conn.execute("TRUNCATE business_numbers, bench_manifest")
    dropped = await secondary_indexes(conn)
    for name, _definition in dropped:
        await conn.execute(f'DROP INDEX "{name}"')
    loaded = Loaded()
    tokenizer = Tokenizer(keyword_key(pepper))
    pending: dict[str, list[tuple[Any, ...]]] = {"archive_objects": [], "archived_events": [], "keyword_index": []}
    columns = {
        "archive_objects": [
            "object_key",
            "topic",
            "kafka_partition",
            "first_offset",
            "last_offset",
            "record_count",
            "size_bytes",
            "retain_until",
            "expires_at",
        ],
        "archived_events": list(INDEX_COLUMNS),
        "keyword_index": ["object_key", "subject_ref", "tokens"],
    }
    copy_s = 0.0

    async def flush(force: bool) -> None:
        nonlocal copy_s
        for table, rows in pending.items():
            if rows and (force or len(rows) >= COPY_CHUNK):
                started = time.monotonic()
                await conn.copy_records_to_table(table, records=rows, columns=columns[table])
                copy_s += time.monotonic() - started
                pending[table] = []

    for partition, first, batch in objects(plan, crowd, vocab):
        obj, rows, keywords = object_rows(plan, crowd, tokenizer, partition, first, batch)
        pending["archive_objects"].append(obj)
        pending["archived_events"].extend(rows)
        pending["keyword_index"].extend(keywords)
        loaded.objects += 1
        loaded.events += len(rows)
        loaded.messages += sum(
            1 for e in batch if e.kind in ("message", "echo", "outbound") and e.type in ("text", "image")
        )
        loaded.keyword_rows += len(keywords)
        await flush(False)
        if loaded.objects % 100 == 0:
            print(
                f"  {loaded.events:>9,} events in {loaded.objects:,} objects ({time.monotonic() - began:,.0f} s)",
                flush=True,
            )
    await flush(True)
    generated_s = time.monotonic() - began
    aliases = sorted({ref.hex() for ref in crowd.refs})
    await conn.copy_records_to_table(
        "subject_aliases", records=[(r, r) for r in aliases], columns=["alias_ref", "subject_ref"]
    )
    loaded.aliases = len(aliases)
    numbers = [(plan.phone_number_id(n), plan.waba_id(n)) for n in range(len(NUMBER_SHARES))]
    await conn.copy_records_to_table("business_numbers", records=numbers, columns=["phone_number_id", "waba_id"])
    started = time.monotonic()
    await conn.execute("SET maintenance_work_mem = '512MB'")
    for name, definition in dropped:
        index_began = time.monotonic()
        await conn.execute(definition)
        print(f"  index {name}: {time.monotonic() - index_began:,.1f} s", flush=True)
    indexes_s = time.monotonic() - started
    started = time.monotonic()
    for table in LOADED:
        await conn.execute(f"VACUUM (ANALYZE) {table}")
    vacuum_s = time.monotonic() - started
    figures: dict[str, Any] = {
        "events": loaded.events,
        "messages": loaded.messages,
        "keyword_rows": loaded.keyword_rows,
        "objects": loaded.objects,
        "people": plan.people,
        "aliases": loaded.aliases,
        "build_seconds": {
            "generate_and_copy": round(generated_s, 1),
            "of_which_copy": round(copy_s, 1),
            "indexes": round(indexes_s, 1),
            "vacuum_analyze": round(vacuum_s, 1),
            "total": round(time.monotonic() - began, 1),
        },
    }
    await conn.execute(
        "INSERT INTO bench_manifest (params, figures) VALUES ($1::jsonb, $2::jsonb)",
        orjson.dumps(params).decode(),
        orjson.dumps(figures).decode(),
    )
    return figures


async def sizes(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT c.relname, pg_total_relation_size(c.oid) AS total FROM pg_class c"
        " WHERE c.relname = ANY($1::text[]) AND c.relkind = 'r'",
        list(LOADED),
    )
    found = {r["relname"]: int(r["total"]) for r in rows}
    found["database"] = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    return found


def plan_params(plan: Plan) -> dict[str, Any]:
    return {**asdict(plan), "vocabulary": vocabulary_digest(vocabularies(plan.seed)), "version": MANIFEST_VERSION}


async def prepare(env: dict[str, str], plan: Plan, database: str, rebuild: bool) -> tuple[str, dict[str, Any]]:
    """The bench database, migrated, holding the plan's index (built now unless reusable); its owner's DSN and
    the manifest's figures (with ``built_now``)."""
    created = await ensure_database(env, database)
    owner_dsn = with_database(env["WA_MIGRATOR_PG__DSN"], database)
    applied = await migrate_dsn(owner_dsn)
    if applied:
        print(f"bench database {database}: applied {', '.join(applied)}", flush=True)
    pepper = base64.b64decode(env["WA_RETENTION_KEYS__PEPPER"])
    params = plan_params(plan)
    conn = await asyncpg.connect(owner_dsn)
    try:
        figures, why = (None, "--rebuild") if rebuild or created else await reusable(conn, params)
        print(f"bench index in {database}: {why}", flush=True)
        built_now = figures is None
        if figures is None:
            await conn.execute(MANIFEST_TABLE)
            figures = await build(conn, plan, pepper, params)
            print(f"built: {figures}", flush=True)
        figures = {**figures, "built_now": built_now, "sizes": await sizes(conn)}
    finally:
        await conn.close()
    return owner_dsn, figures


# ---------------------------------------------------------------------------------------------------- measuring
SEARCH_TARGET_MS: Final = 300
CASE_REF: Final = "BENCH-SEARCH-1M"
READER: Final = "bench-search-reader"
DPO: Final = "bench-search-dpo"
# The console process signs its people in with tokens drawn for the run (a token written here would be a
# published one).
TOKENS: Final = {READER: secrets.token_urlsafe(32), DPO: secrets.token_urlsafe(32)}
FREQUENT: Final = 12  # the most frequent searchable words of each language


def frequent_queries(plan: Plan, vocab: dict[str, Vocabulary]) -> dict[str, list[str]]:
    """The most frequent words of each language (one word), and pairs of the 30 most frequent that one message
    holds together (two words, as a person searches words they remember from one message)."""
    rng = random.Random(f"{plan.seed}-queries")
    one = [w for language in ("fr", "en") for w in vocab[language].band(0, FREQUENT)]
    two: list[str] = []
    for language in itertools.cycle(("fr", "en")):
        if len(two) >= 2 * FREQUENT:
            break
        head = set(vocab[language].band(0, 30))
        text = message_text(rng, vocab[language])
        pair = sorted({w for w in text.rstrip(".?! ").split() if w in head})
        if len(pair) >= 2:
            two.append(" ".join(rng.sample(pair, 2)))
    return {"one_word": one, "two_words": two}


async def bench_case(actions: Actions, plan: Plan, crowd: People, pepper: bytes) -> dict[str, Any]:
    """The reader's case (opened once, found again later): three people of different activity (the most active,
    the 20th, the 500th) and a group, over the archive's last year."""
    ranked = by_activity(crowd)
    chosen = [ranked[min(rank, len(ranked) - 1)] for rank in (0, 19, 499)]
    async with actions.access.pool.acquire() as conn:
        status = await conn.fetchval("SELECT status FROM cases WHERE case_ref = $1", CASE_REF)
    if status is None:
        await actions.open_case(
            Operator(DPO, "dpo"),
            title="keyword search benchmark",
            case_ref=CASE_REF,
            period_start=END - timedelta(days=365),
            period_end=END,
            custodians=[
                *(CustodianSpec(kind="person", subject_ref=crowd.refs[p].hex()) for p in chosen),
                CustodianSpec(
                    kind="group",
                    group_id=plan.group_id(0),
                    phone_number_id=plan.phone_number_id(crowd.group_numbers[0]),
                ),
            ],
            reviewers=[READER],
        )
    async with actions.access.pool.acquire() as conn:
        scoped = await conn.fetchval(
            "SELECT count(*) FROM archived_events WHERE (subject_ref = ANY($1::bytea[]) OR group_ref = $2)"
            " AND coalesce(event_time, received_at) >= $3",
            [crowd.refs[p] for p in chosen],
            crowd.group_refs[0],
            END - timedelta(days=365),
        )
    return {"case_ref": CASE_REF, "custodians": "3 people (activity ranks 1, 20, 500) and a group", "events": scoped}


Search = Callable[[str], Awaitable[int]]


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds (user + system) the processes ``pids`` have used so far (0 for one that is gone)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def measure_cell(
    run_one: Search, queries: Sequence[str], count: int, cpu_of: Sequence[int] = ()
) -> dict[str, Any]:
    """``count`` searches (after three not counted): latency, hits and, for ``cpu_of`` (the console's process),
    its CPU per search: what a loaded machine's wall time does not say."""
    for query in queries[:3]:  # not counted: the first pay connections and cold pages
        await run_one(query)
    spent: list[float] = []
    hits: list[int] = []
    cpu_before = cpu_seconds(cpu_of)
    for query in itertools.islice(itertools.cycle(queries), count):
        started = time.perf_counter()
        hits.append(await run_one(query))
        spent.append((time.perf_counter() - started) * 1000)
    row = {**distribution(spent), "hits_median": statistics.median(hits), "examples": list(queries[:3])}
    if cpu_of:
        row["process_cpu_ms_per_search"] = round((cpu_seconds(cpu_of) - cpu_before) / count * 1000, 1)
    return row


@dataclass(frozen=True)
class Who:
    """A searcher: as whom, and the filter their searches carry (``phone_number_id``: the DPO on one number)."""

    name: str
    operator: Operator
    phone_number_id: str | None = None


def searchers(plan: Plan) -> list[Who]:
    return [
        Who("dpo_unscoped", Operator(DPO, "dpo")),
        Who("dpo_one_number", Operator(DPO, "dpo"), plan.phone_number_id(0)),
        Who("reader_case", Operator(READER, "reader")),
    ]


async def search_actions(actions: Actions, who: Who, query: str, limit: int = SEARCH_LIMIT) -> int:
    found = await actions.search(
        who.operator, SearchFilter(keywords=query, phone_number_id=who.phone_number_id, limit=limit)
    )
    return len(found)


# The deepest result the admin API gives (services/retention/api/routers/search.py: limit <= 10,000); the console
# shows its first 500 and has no further pages.
DEEP_LIMIT: Final = 10_000


async def search_http(browser: ConsoleClient, who: Who, query: str) -> int:
    data = {"csrf": browser.csrf, "keywords": query}
    if who.phone_number_id:
        data["phone_number_id"] = who.phone_number_id
    answer = await browser.client.post("/search", data=data)
    if answer.status_code != 200:
        raise RuntimeError(f"POST /search answered {answer.status_code}")
    return answer.text.count('class="hit"')


@contextlib.contextmanager
def console_process(env: dict[str, str], database: str) -> Iterator[tuple[str, int]]:
    """``python -m services.console`` over the bench database, signing in the bench's DPO and reader."""
    port, ops_port = free_port(), free_port()
    tokens = {DPO: {"token": TOKENS[DPO], "role": "dpo"}, READER: {"token": TOKENS[READER], "role": "reader"}}
    overrides = {
        "WA_CONSOLE_PG__DSN": with_database(env["WA_CONSOLE_PG__DSN"], database),
        "WA_RETENTION_PG__DSN": with_database(env["WA_RETENTION_PG__DSN"], database),
        "WA_RETENTION_S3__PREFIX": PREFIX,
        "WA_RETENTION_ADMIN_TOKENS": orjson.dumps(tokens).decode(),
        "WA_CONSOLE_PORT": str(port),
        "WA_CONSOLE_OPS_PORT": str(ops_port),
        "WA_CONSOLE_SECURE_COOKIES": "false",
        "WA_CONSOLE_LOG_LEVEL": "WARNING",
    }
    log = Path("/tmp") / f"bench-search-console-{port}.log"
    process = start_module("services.console", {**env, **overrides}, log)
    try:
        wait_http(f"http://127.0.0.1:{ops_port}/readyz")
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)


class _RecordingConnection:
    """Stands for a connection in search_index: records the statements it fetches rows with (answering none), and
    lets the statistics it reads (fetchval: the words' share, a count) come from the real database."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        self.calls.append((sql, args))
        return []

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.real.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        return ""

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()


class _RecordingPool:
    def __init__(self, real: Any) -> None:
        self.conn = _RecordingConnection(real)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_RecordingConnection]:
        yield self.conn


async def explain(actions: Actions, who: Who, query: str) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement search_index fetches rows with for ``query`` as ``who``
    (with plans made for the values, as it runs them)."""
    scope = await actions.reading_scope(who.operator)
    search = SearchFilter(keywords=query, phone_number_id=who.phone_number_id, limit=SEARCH_LIMIT)
    plans: list[str] = []
    async with actions.access.pool.acquire() as conn:
        recorder = _RecordingPool(conn)
        await search_index(recorder, actions.access.pepper, search, scope)  # type: ignore[arg-type]
        for sql, args in recorder.conn.calls:
            async with conn.transaction():
                await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
                rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
            plans.extend(r[0] for r in rows)
    return plans


async def measure(
    env: dict[str, str], plan: Plan, database: str, *, count: int, explain_plans: bool, http: bool
) -> dict[str, Any]:
    pepper = base64.b64decode(env["WA_RETENTION_KEYS__PEPPER"])
    vocab = vocabularies(plan.seed)
    crowd = people(plan, pepper)
    queries = frequent_queries(plan, vocab)
    bench_env = {**env, "WA_RETENTION_PG__DSN": with_database(env["WA_RETENTION_PG__DSN"], database)}
    access = await open_access(pipeline.retention_settings(bench_env, PREFIX))
    figures: dict[str, Any] = {"queries": queries, "actions": {}, "http": {}, "plans": {}}
    try:
        actions = Actions(access, RetentionMetrics(CollectorRegistry()))
        figures["case"] = await bench_case(actions, plan, crowd, pepper)
        for who in searchers(plan):
            for words_name, cell in queries.items():
                row = await measure_cell(partial(search_actions, actions, who), cell, count, cpu_of=[os.getpid()])
                figures["actions"].setdefault(who.name, {})[words_name] = row
                _print("actions", who.name, words_name, row)
                if explain_plans:
                    plan_lines = await explain(actions, who, cell[0])
                    figures["plans"][f"{who.name}/{words_name}: {cell[0]}"] = plan_lines
                    print(f"--- plan, {who.name} {words_name} ({cell[0]!r})\n" + "\n".join(plan_lines), flush=True)
        # A case's saved searches, as its reviewer runs them: one search per custodian (its people by pseudonym, its
        # group), within the case's period, each up to the action layer's default limit (1,000).
        reader = Operator(READER, "reader")
        saved = {
            q: (await actions.save_search(reader, CASE_REF, keywords=q)).search_id
            for q in [*queries["one_word"], *queries["two_words"]]
        }

        async def run_saved(query: str) -> int:
            return len(await actions.run_saved_search(reader, CASE_REF, saved[query]))

        for words_name, cell in queries.items():
            row = await measure_cell(run_saved, cell, count)
            figures["actions"].setdefault("reader_saved_search", {})[words_name] = row
            _print("actions", "reader_saved_search", words_name, row)
        for who in searchers(plan)[::2]:  # the DPO unscoped and the reader
            deep = partial(search_actions, actions, who, limit=DEEP_LIMIT)
            row = await measure_cell(deep, queries["one_word"], max(3, count // 3))
            figures["actions"][who.name][f"one_word_first_{DEEP_LIMIT}"] = row
            _print("actions", who.name, f"deep {DEEP_LIMIT}", row)
    finally:
        await access.close()
    if http:
        with console_process(env, database) as (url, pid):
            for who in searchers(plan):
                async with signed_in(url, (who.operator.name, TOKENS[who.operator.name])) as browser:
                    for words_name, cell in queries.items():
                        row = await measure_cell(partial(search_http, browser, who), cell, count, cpu_of=[pid])
                        figures["http"].setdefault(who.name, {})[words_name] = row
                        _print("http", who.name, words_name, row)
    return figures


def _print(layer: str, who: str, words_name: str, row: dict[str, Any]) -> None:
    cpu = row.get("process_cpu_ms_per_search")
    print(
        f"  {layer:<8} {who:<15} {words_name:<9} n={row['n']:>3}  p50 {row['p50_ms']:>7.1f}  p95 {row['p95_ms']:>7.1f}"
        f"  max {row['max_ms']:>7.1f} ms  hits~{row['hits_median']}"
        + (f"  console CPU {cpu} ms/search" if cpu is not None else ""),
        flush=True,
    )


def summary(figures: dict[str, Any]) -> str:
    index = figures["index"]
    build_s = index["build_seconds"]
    lines = [
        f"index: {index['messages']:,} messages ({index['events']:,} events, {index['keyword_rows']:,} keyword rows,"
        f" {index['objects']:,} objects) in {figures['database']}, {index['sizes']['database'] / 1e6:,.0f} MB;"
        f" {'built now' if index['built_now'] else 'reused'} (build {build_s['total']:,} s)",
        f"keyword search, most frequent words, ms (target p95 <= {SEARCH_TARGET_MS})"
        "        n     p50     p95     max  hits",
    ]
    for layer, label in (("actions", "Actions.search"), ("http", "POST /search")):
        for who, cells in figures["search"].get(layer, {}).items():
            for words_name, c in cells.items():
                verdict = "met" if c["p95_ms"] <= SEARCH_TARGET_MS else "MISSED"
                lines.append(
                    f"  {label:<15} {who:<15} {words_name:<9} {c['n']:>5} {c['p50_ms']:>7.1f} {c['p95_ms']:>7.1f}"
                    f" {c['max_ms']:>7.1f} {c['hits_median']!s:>5}  {verdict}"
                )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    env = demo_env()
    plan = Plan(args.messages, args.people, args.days, args.seed)
    _dsn, index = await prepare(env, plan, args.database, args.rebuild)
    measured = await measure(
        env, plan, args.database, count=args.queries, explain_plans=args.explain, http=not args.skip_http
    )
    return {
        "database": args.database,
        "index": index,
        "case": measured.pop("case"),
        "queries": measured.pop("queries"),
        "search": {"actions": measured["actions"], "http": measured["http"]},
        "plans": measured["plans"],
        "target_p95_ms": SEARCH_TARGET_MS,
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument(
        "--database", help=f"the bench's own database, created if missing ({DATABASE} for 1,000,000 messages)"
    )
    parser.add_argument("--queries", type=int, default=40, help="searches per cell (after 3 not counted)")
    parser.add_argument("--rebuild", action="store_true", help="build the index even if one is there")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN (ANALYZE, BUFFERS) one search per cell")
    parser.add_argument("--skip-http", action="store_true", help="the action layer only")
    args = parser.parse_args()
    if args.messages < 1 or args.queries < 1:
        parser.error("--messages and --queries must be positive")
    # A size of its own, a database of its own: a quick or smoke run never rebuilds the 1,000,000-message index.
    args.database = args.database or (DATABASE if args.messages == 1_000_000 else f"wa_archive_bench_{args.messages}")
    ensure_stack()
    figures = asyncio.run(run(args))
    write_result("search", figures)
    print(summary(figures))


if __name__ == "__main__":
    main()
