"""Find every pseudonym of a person: by phone number, business-scoped user id or pseudonym, across business numbers.

A person may be known by ``wa_id`` (phone number) or by a business-scoped ``user_id``; each business phone
number gives them a different pseudonym, and a number that changed hands one per holder. :func:`resolve_subject_refs`
returns all of them, following the alias table, so retrieval, export, holds and erasure by either identifier reach
all their data.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.core.db import ConnectionOrPool
from services.core.holders import current_since, number_changes
from services.core.pseudonym import holder_ref, subject_ref


async def business_numbers(conn: ConnectionOrPool) -> list[str]:
    rows = await conn.fetch("SELECT phone_number_id FROM business_numbers ORDER BY phone_number_id")
    return [row["phone_number_id"] for row in rows]


# How far an identity is followed through the alias graph; a person has a handful of identifiers per number.
ALIAS_DEPTH_MAX = 32


# Every pseudonym connected to the given ones through subject_aliases, in either direction. An alias row says "the
# record sealed under subject_ref also named the person by alias_ref" (wa_id and business-scoped user id in one
# message): Meta's own assertion that both are one person. Rows never link two business numbers (a pseudonym is
# per number), so the closure stays within the numbers asked for. Each row keeps the pseudonym it started from.
LINKED_SQL = """
WITH RECURSIVE reach(start, ref, depth) AS (
    SELECT s, s, 0 FROM unnest($1::text[]) AS s
    UNION
    SELECT r.start, n.other, r.depth + 1
    FROM reach r
    CROSS JOIN LATERAL (
        SELECT a.subject_ref AS other FROM subject_aliases a WHERE a.alias_ref = r.ref
        UNION ALL
        SELECT a.alias_ref FROM subject_aliases a WHERE a.subject_ref = r.ref
    ) n
    WHERE r.depth < $2
)
SELECT DISTINCT start, ref FROM reach
"""


async def linked_subject_refs(conn: ConnectionOrPool, refs: Iterable[str]) -> dict[str, set[str]]:
    """For each of ``refs``, itself and every pseudonym linked to it, transitively (one query for all of them)."""
    start = sorted(set(refs))
    found: dict[str, set[str]] = {ref: {ref} for ref in start}
    if start:
        for row in await conn.fetch(LINKED_SQL, start, ALIAS_DEPTH_MAX):
            found[row["start"]].add(row["ref"])
    return found


async def expand_subject_refs(conn: ConnectionOrPool, refs: Iterable[str]) -> list[str]:
    """``refs`` and every pseudonym linked to them, transitively: a person first seen by phone number, then by
    phone number and business-scoped user id, then by user id only is one person under all three."""
    return sorted({ref for linked in (await linked_subject_refs(conn, refs)).values() for ref in linked})


async def resolve_subject_refs(
    conn: ConnectionOrPool, pepper: bytes, contact: str, phone_number_id: str | None = None
) -> list[str]:
    """Every subject_ref under which this person's records are sealed (possibly none): the pseudonyms of
    ``contact`` under each business number (or the one given), and every pseudonym linked to them.

    A phone number that changed hands (services/core/holders.py) names its current holder: the person who left it
    is reached by their new number, through the link the change made."""
    numbers = [phone_number_id] if phone_number_id else await business_numbers(conn)
    firsts = {number: subject_ref(pepper, number, contact) for number in numbers}
    changes = await number_changes(conn, firsts.values())
    holders = [
        holder_ref(pepper, number, contact, current_since(changes.get(first, ()))) for number, first in firsts.items()
    ]
    return await expand_subject_refs(conn, holders)
