"""The keyword search's two ways (a walk in time order, a gathering of every match: services/review/search.py) give
the page the search gave before them, on the real PostgreSQL: hypothesis draws the words, the page's size, the walk's
budget and the filters (a business number, a reader's scope of people, groups and a period, dates, people), over
index rows written here with many events of the same second, statuses, deletions, edits and events without a time.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.core.index import INDEX_COLUMNS
from services.core.keywords import keyword_key, keyword_token, query_tokens
from services.core.schema import connect_pool
from services.governance.scope import EVERYTHING, Grant, ReadingScope, scope_sql
from services.review.search import DELETED, EDITED, SEARCHABLE_KINDS, IndexHit, SearchFilter, search_index

pytestmark = pytest.mark.integration

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")
# How often a person's messages in an object hold each word: the first in most, the last in few.
WORD_SHARES = (0.85, 0.5, 0.3, 0.15, 0.05, 0.02)
PEOPLE = 10
GROUPS = 2
EVENTS = 360
PER_OBJECT = 40
START = datetime(2026, 3, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Archive:
    """Index rows of a business number of this run only: its people's and groups' pseudonyms."""

    phone_number_id: str
    people: list[bytes]
    groups: list[bytes]


def index_rows(phone_number_id: str, prefix: str, pepper: bytes, seed: int) -> tuple[Archive, list[Any], list[Any]]:
    """archived_events and keyword_index rows: times within two minutes (many events of one second), one in fifty
    without a time, statuses, revokes and edits pointing at earlier messages, some events in groups."""
    rng = random.Random(seed)
    people = [rng.randbytes(32) for _ in range(PEOPLE)]
    groups = [rng.randbytes(32) for _ in range(GROUPS)]
    key = keyword_key(pepper)
    events: list[Any] = []
    messages: list[bytes] = []
    pairs: dict[tuple[str, bytes], None] = {}
    for position in range(EVENTS):
        person = rng.choice(people)
        object_key = f"{prefix}/wa.events/00000/{position // PER_OBJECT:020d}.waarc"
        kind, type_, original = (
            rng.choice(("message", "message", "message", "echo", "outbound", "history")),
            "text",
            None,
        )
        roll = rng.random()
        if roll < 0.15:
            kind, type_ = "status", rng.choice(("delivered", "read", "deleted"))
        elif roll < 0.2 and messages:
            type_ = rng.choice(("revoke", "edit"))
        if (kind == "status" or type_ in ("revoke", "edit")) and messages:
            original = rng.choice(messages)
        ref = rng.randbytes(32)
        if kind != "status":
            messages.append(ref)
            pairs[(object_key, person)] = None
        at = None if rng.random() < 0.02 else START + timedelta(seconds=rng.randrange(120))
        events.append(
            (
                rng.randbytes(16),
                person,
                None,
                "bench-waba",
                phone_number_id,
                kind,
                type_,
                ref,
                original,
                at,
                at or START,
                object_key,
                position % PER_OBJECT,
                0,
                position,
                "default",
                None,
                False,
                rng.choice(groups) if rng.random() < 0.2 else None,
            )
        )
    keywords = [
        (
            object_key,
            person,
            sorted(keyword_token(key, w) for w, s in zip(WORDS, WORD_SHARES, strict=True) if rng.random() < s),
        )
        for object_key, person in pairs
    ]
    return Archive(phone_number_id, people, groups), events, keywords


@pytest.fixture(scope="module")
async def archive(pg_pool: asyncpg.Pool, demo_env: dict[str, str]) -> AsyncIterator[Archive]:
    pepper = _pepper(demo_env)
    number = "1999" + str(uuid.uuid4().int)[:11]
    prefix = f"test-keyword-plans-{uuid.uuid4().hex[:8]}"
    written, events, keywords = index_rows(number, prefix, pepper, seed=25)
    async with pg_pool.acquire() as conn:
        await conn.copy_records_to_table("archived_events", records=events, columns=list(INDEX_COLUMNS))
        await conn.copy_records_to_table(
            "keyword_index", records=keywords, columns=["object_key", "subject_ref", "tokens"]
        )
    try:
        yield written
    finally:
        async with pg_pool.acquire() as conn:
            await conn.execute("DELETE FROM keyword_index WHERE object_key LIKE $1", prefix + "/%")
            await conn.execute("DELETE FROM archived_events WHERE phone_number_id = $1", number)


@pytest.fixture(scope="module")
async def retention_pool(demo_env: dict[str, str], archive: Archive) -> AsyncIterator[asyncpg.Pool]:
    """The search as the service runs it: retention's login."""
    pool = await connect_pool(demo_env["WA_RETENTION_PG__DSN"], min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


def _pepper(demo_env: dict[str, str]) -> bytes:
    import base64

    return base64.b64decode(demo_env["WA_RETENTION_KEYS__PEPPER"])


async def search_before(pool: asyncpg.Pool, pepper: bytes, query: SearchFilter, scope: ReadingScope) -> list[IndexHit]:
    """The keyword search as it was before the walk (one statement: the pairs holding the words, joined to their
    events, sorted by time), with the order among events of the same second, which it left to the plan, made the
    one the search now gives (by event id)."""
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if not scope.everything:
        clauses.append(scope_sql(scope, arg))
    if query.subject_refs is not None:
        clauses.append(f"e.subject_ref = ANY({arg([bytes.fromhex(r) for r in query.subject_refs])}::bytea[])")
    if query.group_ref is not None:
        clauses.append(f"e.group_ref = {arg(bytes.fromhex(query.group_ref))}")
    if query.phone_number_id:
        clauses.append(f"e.phone_number_id = {arg(query.phone_number_id)}")
    if query.since:
        clauses.append(f"e.event_time >= {arg(query.since)}")
    if query.until:
        clauses.append(f"e.event_time <= {arg(query.until)}")
    assert query.keywords is not None
    tokens = query_tokens(keyword_key(pepper), query.keywords)
    clauses.append(
        "(e.object_key, e.subject_ref) IN (SELECT k.object_key, k.subject_ref FROM keyword_index k"
        f" WHERE k.tokens @> {arg(tokens)}::bigint[])"
    )
    clauses.append(f"e.kind = ANY({arg(SEARCHABLE_KINDS)}::text[])")
    clauses.append("e.type IS DISTINCT FROM 'revoke'")
    sql = (
        "SELECT encode(e.event_id, 'hex') AS event_id, e.kind, e.type, e.phone_number_id,"
        " encode(e.subject_ref, 'hex') AS subject_ref, e.event_time, e.received_at,"
        f" e.retention_class, e.expires_at, {DELETED} AS deleted, {EDITED} AS edited "
        f"FROM archived_events e WHERE {' AND '.join(clauses)} ORDER BY e.event_time, e.event_id"
        f" LIMIT {arg(query.limit)}"
    )
    async with pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
    return [IndexHit(**dict(row)) for row in rows]


@dataclass(frozen=True)
class Case:
    """One drawn search: the query, the reader's scope, and how the new search is made to run."""

    query: SearchFilter
    scope: ReadingScope
    walk: bool | None
    budget: int


def moments() -> st.SearchStrategy[datetime | None]:
    return st.one_of(st.none(), st.integers(-5, 125).map(lambda s: START + timedelta(seconds=s)))


def cases(archive: Archive) -> st.SearchStrategy[Case]:
    people = st.sets(st.sampled_from(archive.people), max_size=4).map(lambda s: frozenset(r.hex() for r in s))
    groups = st.sets(st.sampled_from(archive.groups), max_size=2).map(lambda s: frozenset(r.hex() for r in s))
    grant = st.builds(
        lambda who, groups, number, since, until: Grant(
            source="CASE-T",
            subject_refs=who,
            group_refs=groups,
            phone_number_ids=frozenset([archive.phone_number_id]) if number else frozenset(),
            since=since,
            until=until,
        ),
        people,
        groups,
        st.booleans(),
        moments(),
        moments(),
    )
    # A reader's scope alone keeps the search on this run's rows; without one, the business number does.
    scoped = st.lists(grant, min_size=1, max_size=2).map(lambda grants: ReadingScope(tuple(grants)))
    return st.builds(
        lambda words, limit, scope, number, since, until, who, walk, budget: Case(
            SearchFilter(
                keywords=" ".join(words),
                limit=limit,
                phone_number_id=archive.phone_number_id if number or scope is None else None,
                since=since,
                until=until,
                subject_refs=tuple(sorted(who)) if who else None,
            ),
            scope or EVERYTHING,
            walk,
            budget,
        ),
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=2, unique=True),
        st.integers(1, 60),
        st.one_of(st.none(), scoped),
        st.booleans(),
        moments(),
        moments(),
        st.one_of(st.none(), people),
        st.sampled_from((None, True, False)),
        st.integers(1, 400),
    )


async def test_the_walk_and_the_gathering_give_the_page_the_search_gave_before(
    archive: Archive, retention_pool: asyncpg.Pool, demo_env: dict[str, str]
) -> None:
    pepper = _pepper(demo_env)
    loop = asyncio.get_running_loop()
    compared: list[tuple[int, bool | None]] = []

    def run(coroutine: Callable[[], Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine(), loop).result(timeout=60)

    number = archive.phone_number_id

    @settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(cases(archive))
    # Pinned, so that every run has them: a walk that stops short of its page (the gathering must follow), one that
    # fills it, one that walks every selected event, for the most frequent word.
    @example(Case(SearchFilter(keywords="alpha", limit=50, phone_number_id=number), EVERYTHING, True, 3))
    @example(Case(SearchFilter(keywords="alpha", limit=5, phone_number_id=number), EVERYTHING, True, 40))
    @example(Case(SearchFilter(keywords="alpha beta", limit=60, phone_number_id=number), EVERYTHING, True, 400))
    def one_search(case: Case) -> None:
        before = run(lambda: search_before(retention_pool, pepper, case.query, case.scope))
        now = run(
            lambda: search_index(
                retention_pool, pepper, case.query, case.scope, walk=case.walk, walk_budget=case.budget
            )
        )
        assert now == before
        compared.append((len(before), case.walk))

    await asyncio.to_thread(one_search)
    # The draws reach full pages, partial ones and empty ones, with each way of running.
    assert {walk for found, walk in compared if found} == {None, True, False}
    assert any(found == 0 for found, _ in compared)
    assert any(found >= 20 for found, _ in compared)
