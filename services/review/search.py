"""Search over index metadata only: nothing is decrypted, so no reason is needed and no content is shown.

Filters: business phone number, contact (resolved to every pseudonym of the person), time range, kind, type,
deleted-only (a revoke or a ``deleted`` status points at the message), edited-only (an edit points at it) and
keywords: the messages of a person in a batch object whose keyword tokens hold every word of the query
(services/core/keywords.py). Keyword hits are candidates: the index knows that the person wrote the words in that
object, not in which message; the decrypted conversation says which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Final

import asyncpg
import orjson

from services.core.db import Connection
from services.core.identity import resolve_subject_refs
from services.core.index import binary_keys
from services.core.keywords import keyword_key, query_tokens
from services.core.vocabulary import MESSAGE_KINDS, EventKind
from services.governance.scope import EVERYTHING, ReadingScope, scope_sql

DELETED = (
    "EXISTS (SELECT 1 FROM archived_events d WHERE d.original_message_ref = e.message_ref "
    "AND (d.type = 'revoke' OR (d.kind = 'status' AND d.type = 'deleted')))"
)
# Keywords are the words of messages (services/core/keywords.py): a keyword search finds messages only.
SEARCHABLE_KINDS = sorted(MESSAGE_KINDS)
EDITED = "EXISTS (SELECT 1 FROM archived_events d WHERE d.original_message_ref = e.message_ref AND d.type = 'edit')"


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexHit:
    """One index row: pseudonymous metadata of an archived event, nothing decrypted."""

    event_id: str
    kind: EventKind
    type: str | None
    phone_number_id: str | None
    subject_ref: str | None
    event_time: datetime | None
    received_at: datetime
    retention_class: str
    expires_at: datetime | None
    deleted: bool
    edited: bool

    def to_json(self) -> dict[str, Any]:
        """The row as JSON-ready values (timestamps as ISO 8601), as the API and the CLI print it."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def _jsonable(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchFilter:
    phone_number_id: str | None = None
    contact: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    kind: EventKind | None = None
    type: str | None = None
    deleted_only: bool = False
    edited_only: bool = False
    limit: int = 1000
    keywords: str | None = None
    # Pseudonyms already resolved (a case's custodian: a person's, or a group's), narrowing like ``contact``.
    subject_refs: tuple[str, ...] | None = None
    group_ref: str | None = None


# Keywords are the words of messages: a keyword search reads the message kinds alone, named as migration 0030's
# partial index names them (archived_events_message_time), so that PostgreSQL may walk that index in time order.
KEYWORD_KINDS_SQL: Final = "e.kind IN (" + ", ".join(f"'{kind}'" for kind in SEARCHABLE_KINDS) + ")"
# At most this many messages are walked in time order for a keyword search before it gathers every match instead.
# Measured on a saturated 2-core machine (bench/search.py, EXPLAIN ANALYZE): the walk about 37 µs a message (a
# primary-key lookup of its object and person each), the gathering about 9 µs a matching event before its sort:
# walking these many costs about what gathering 80,000 matching events does.
KEYWORD_WALK_BUDGET: Final = 20_000
HIT_COLUMNS: Final = (
    "encode(e.event_id, 'hex') AS event_id, e.kind, e.type, e.phone_number_id, encode(e.subject_ref, 'hex') AS"
    " subject_ref, e.event_time, e.received_at, e.retention_class, e.expires_at"
)
# What the walk and the gathering carry from archived_events to the page, the flags' columns included.
PAGE_COLUMNS: Final = (
    "e.event_id, e.kind, e.type, e.phone_number_id, e.subject_ref, e.event_time, e.received_at, e.retention_class,"
    " e.expires_at, e.message_ref"
)
# Events of the same second are ordered by their id, so that a page is the same whatever plan found it.
HIT_ORDER: Final = "e.event_time, e.event_id"


def keyword_walk_sql(where: str, *, tokens: str, budget: str, limit: str) -> str:
    """The keyword search as a walk: the events ``where`` selects, in time order, at most ``budget`` of them, each
    kept when its (object, person) pair's tokens hold every one of ``tokens``, until ``limit`` are kept. The pair
    is looked up per event (a correlated scalar subquery, which PostgreSQL never turns into a join), so the walk
    stops at its page whatever the planner thinks of the words; the deletion and edit flags are looked up for the
    page's events alone. Complete when it keeps ``limit`` events, or when fewer than ``budget`` were walked."""
    return (
        f"SELECT {HIT_COLUMNS}, {DELETED} AS deleted, {EDITED} AS edited FROM ("  # noqa: S608 — constants and placeholders
        f"SELECT e.* FROM (SELECT {PAGE_COLUMNS}, e.object_key FROM archived_events e WHERE {where}"
        f" ORDER BY {HIT_ORDER} LIMIT {budget}) e"
        f" WHERE (SELECT k.tokens @> {tokens}::bigint[] FROM keyword_index k"
        " WHERE k.object_key = e.object_key AND k.subject_ref = e.subject_ref)"
        f" ORDER BY {HIT_ORDER} LIMIT {limit}) e ORDER BY {HIT_ORDER}"
    )


def keyword_gather_sql(where: str, *, tokens: str, limit: str) -> str:
    """The keyword search by gathering: every (object, person) pair whose tokens hold ``tokens`` (the GIN index),
    their events that ``where`` selects, sorted, the first ``limit`` kept; the deletion and edit flags looked up
    for those alone. For words few messages hold."""
    return (
        f"SELECT {HIT_COLUMNS}, {DELETED} AS deleted, {EDITED} AS edited FROM ("  # noqa: S608 — constants and placeholders
        f"SELECT {PAGE_COLUMNS} FROM archived_events e WHERE {where}"
        " AND (e.object_key, e.subject_ref) IN (SELECT k.object_key, k.subject_ref FROM keyword_index k"
        f" WHERE k.tokens @> {tokens}::bigint[]) ORDER BY {HIT_ORDER} LIMIT {limit}) e ORDER BY {HIT_ORDER}"
    )


def walk_budget_for(limit: int) -> int:
    """How many messages a keyword search for a page of ``limit`` walks at most before it gathers: at least
    :data:`KEYWORD_WALK_BUDGET`, and four messages per hit for a deep page (the admin API gives up to 10,000), so
    that a word a quarter of the rows hold still walks: gathering it would sort a quarter of the archive."""
    return max(KEYWORD_WALK_BUDGET, 4 * limit)


def walk_first(share: float, limit: int, budget: int = KEYWORD_WALK_BUDGET) -> bool:
    """Whether a keyword search should walk before it gathers: when the share of (object, person) pairs that hold
    the words (:func:`combined_share`) promises ``limit`` hits within ``budget`` events walked."""
    return share > 0 and limit / share <= budget


def combined_share(shares: Sequence[float]) -> float:
    """The share of rows holding every one of several words, from each word's own share: the rarest word's share,
    times the square root of the next one's, times the fourth root of the next... (exponential backoff). Words
    are not independent: the words of one language come together (a French customer's rows hold French words),
    so the product of the shares, PostgreSQL's estimate, said 0.3-0.5 of the rows two frequent words share on the
    bench's archive (bench/search.py: 5,164 for "order for", which 17,713 rows hold); the backoff said 0.6-2.0 of
    them. 0.0 without words."""
    combined = 0.0
    for power, share in enumerate(sorted(shares)):
        combined = share if power == 0 else combined * share ** (0.5**power)
    return combined


async def keyword_share(conn: Connection, tokens: list[int]) -> float:
    """The estimated share of keyword_index rows that hold every one of ``tokens``: PostgreSQL's estimate for each
    token (its statistics of the most common tokens: ANALYZE), combined by :func:`combined_share`; 0.0 for an
    empty table."""
    total = await conn.fetchval("SELECT reltuples FROM pg_class WHERE oid = 'keyword_index'::regclass")
    if not total or total <= 0:
        return 0.0
    shares = []
    for token in tokens:
        plan = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM keyword_index k WHERE k.tokens @> $1::bigint[]", [token]
        )
        rows = float(orjson.loads(plan)[0]["Plan"]["Plan Rows"]) if isinstance(plan, str) else 0.0
        shares.append(min(rows / total, 1.0))
    return combined_share(shares)


async def search_index(
    pool: asyncpg.Pool,
    pepper: bytes,
    query: SearchFilter,
    scope: ReadingScope = EVERYTHING,
    *,
    walk: bool | None = None,
    walk_budget: int | None = None,
) -> list[IndexHit]:
    """The index rows ``query`` asks for within ``scope`` (the reader's: services/governance/scope.py), in time
    order (events of the same second by id), at most ``query.limit``: the scope is part of the query, so that what
    it leaves out is neither returned nor counted nor crowds out what it lets through.

    A keyword search either walks the selected messages in time order, checking each one's tokens, or gathers
    every match and sorts it (:func:`keyword_walk_sql`, :func:`keyword_gather_sql`); both give the same page. It
    walks when the words are common enough to fill the page within ``walk_budget`` messages (by default
    :func:`walk_budget_for` the page; :func:`walk_first`;
    ``walk`` True or False decides instead: the tests' way to compare both), and gathers after a walk that neither
    filled the page nor saw every selected message."""
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    # Every value is a bind parameter; only the fixed clauses above are interpolated.
    async with pool.acquire() as conn:
        if not scope.everything:
            clauses.append(scope_sql(scope, arg))
        if query.contact:
            refs = await resolve_subject_refs(conn, pepper, query.contact, query.phone_number_id)
            clauses.append(f"e.subject_ref = ANY({arg(binary_keys(refs))}::bytea[])")
        if query.subject_refs is not None:
            clauses.append(f"e.subject_ref = ANY({arg(binary_keys(query.subject_refs))}::bytea[])")
        if query.group_ref is not None:
            clauses.append(f"e.group_ref = {arg(bytes.fromhex(query.group_ref))}")
        if query.phone_number_id:
            clauses.append(f"e.phone_number_id = {arg(query.phone_number_id)}")
        if query.since:
            clauses.append(f"e.event_time >= {arg(query.since)}")
        if query.until:
            clauses.append(f"e.event_time <= {arg(query.until)}")
        if query.kind:
            clauses.append(f"e.kind = {arg(query.kind)}")
        if query.type:
            clauses.append(f"e.type = {arg(query.type)}")
        if query.deleted_only:
            clauses.append(DELETED)
        if query.edited_only:
            clauses.append(EDITED)
        if query.keywords is None:
            where = " AND ".join(clauses) or "TRUE"
            sql = (
                f"SELECT {HIT_COLUMNS}, {DELETED} AS deleted, {EDITED} AS edited "  # noqa: S608 — clauses are constants; values are bind parameters
                f"FROM archived_events e WHERE {where} ORDER BY e.event_time LIMIT {arg(query.limit)}"
            )
            rows = await conn.fetch(sql, *args)
            return [IndexHit(**dict(row)) for row in rows]
        tokens = query_tokens(keyword_key(pepper), query.keywords)
        if not tokens:
            return []  # no searchable word (one letter, punctuation): nothing can match
        clauses.append(KEYWORD_KINDS_SQL)
        clauses.append("e.type IS DISTINCT FROM 'revoke'")  # a deletion carries no words of its own
        where = " AND ".join(clauses)
        filters = list(args)
        words, limit = arg(tokens), arg(query.limit)
        # Each statement is prepared once per connection, and after a few runs PostgreSQL may switch to a generic
        # plan that cannot see how rare the words are (bench/console.py: ~430 ms whatever the words, on 1,000,000
        # messages): every plan here is made for the values.
        async with conn.transaction():
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            if walk is None:
                walk_budget = walk_budget or walk_budget_for(query.limit)
                walk = walk_first(await keyword_share(conn, tokens), query.limit, walk_budget)
            if walk:
                walk_budget = walk_budget or walk_budget_for(query.limit)
                budget = arg(walk_budget)
                rows = await conn.fetch(keyword_walk_sql(where, tokens=words, budget=budget, limit=limit), *args)
                if len(rows) >= query.limit or not await _more_than(conn, where, filters, walk_budget):
                    return [IndexHit(**dict(row)) for row in rows]
                args.pop()  # the budget: the gathering has none
            rows = await conn.fetch(keyword_gather_sql(where, tokens=words, limit=limit), *args)
    return [IndexHit(**dict(row)) for row in rows]


async def _more_than(conn: Connection, where: str, args: list[Any], count: int) -> bool:
    """Whether ``where`` selects more than ``count`` events (it stops counting there)."""
    found = await conn.fetchval(
        f"SELECT count(*) FROM (SELECT 1 FROM archived_events e WHERE {where} LIMIT {count + 1}) e",  # noqa: S608
        *args,
    )
    return bool(found > count)
