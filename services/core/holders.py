"""Who holds a phone number: a number changes hands when its customer moves to another one.

The Cloud API tells the business when a customer changed number: a ``system`` message of type
``user_changed_number``, sent from the old number, naming the new one (``system.wa_id``). From that moment the old
number is no longer that person's, and carriers recycle numbers: whoever gets it next must not be filed under the
first person, or a retrieval, an export or an erasure by the first person's new number would reach the stranger.

- The change is kept as (the old number's first pseudonym, the moment) in ``number_holders`` (migration 0014):
  pseudonyms and a time, never a number.
- A record of the old number from after the change is sealed under the pseudonym of its next holder
  (:func:`services.core.pseudonym.holder_ref`), with a key of its own; a record from before it, or from the very
  moment of the change (the change message itself), under the earlier holder's.
- The change message links the earlier holder's pseudonym with the new number's (an alias row): one person.
- A lookup by a number (retrieval, export, erasure, holds) means its current holder (:func:`current_since`).

Each number's changes are a list of moments in ascending order; the functions here are pure but the two queries.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from services.core.db import ConnectionOrPool
from services.core.events import Event

# The type's name, and where the new number is: today's Cloud API, and the older name and field some webhooks (and
# the On-Premises API) still carry.
NUMBER_CHANGES = {"user_changed_number": "wa_id", "customer_changed_number": "new_wa_id"}


def new_number(event: Event) -> str | None:
    """The number a customer moved to, when ``event`` is their ``user_changed_number`` system message (sent from
    the old number; ``customer_changed_number`` with ``new_wa_id`` in older payloads); None for any other event,
    and for a change that names no number or the same one."""
    if event.kind != "message" or event.type != "system" or event.subject is None or not event.subject.wa_id:
        return None
    system = event.payload.get("system") if isinstance(event.payload, dict) else None
    kind = system.get("type") if isinstance(system, dict) else None
    if not isinstance(system, dict) or not isinstance(kind, str) or kind not in NUMBER_CHANGES:
        return None
    moved_to = system.get(NUMBER_CHANGES[kind])
    if not isinstance(moved_to, str) or not moved_to.isdigit() or moved_to == event.subject.wa_id:
        return None
    return moved_to


def holder_since(changes: Sequence[datetime], at: datetime) -> datetime | None:
    """When the holder of a number at ``at`` got it: the latest of its ``changes`` strictly before ``at``, or None
    for the number's first holder. A record of the very moment of a change is the earlier holder's."""
    before = bisect_left(changes, at)
    return changes[before - 1] if before else None


def current_since(changes: Sequence[datetime]) -> datetime | None:
    """When the number's current holder got it (its latest change), or None when it never changed hands."""
    return changes[-1] if changes else None


def with_changes(
    known: Mapping[str, Sequence[datetime]], more: Iterable[tuple[str, datetime]]
) -> dict[str, list[datetime]]:
    """``known`` ({first pseudonym: changes}) and ``more`` merged, each list ascending and without repeats."""
    merged = {ref: list(changes) for ref, changes in known.items()}
    for ref, at in more:
        changes = merged.setdefault(ref, [])
        if at not in changes:
            insort(changes, at)
    return merged


async def number_changes(conn: ConnectionOrPool, number_refs: Iterable[str]) -> dict[str, list[datetime]]:
    """{first pseudonym: its changes, ascending} of the numbers among ``number_refs`` that changed hands."""
    refs = sorted(set(number_refs))
    if not refs:
        return {}
    rows = await conn.fetch(
        "SELECT number_ref, since FROM number_holders WHERE number_ref = ANY($1::text[]) ORDER BY number_ref, since",
        refs,
    )
    found: dict[str, list[datetime]] = {}
    for row in rows:
        found.setdefault(row["number_ref"], []).append(row["since"])
    return found


async def record_number_changes(conn: ConnectionOrPool, changes: Iterable[tuple[str, datetime]]) -> None:
    """Keep each (first pseudonym of the old number, moment) once (in the transaction that indexes the batch)."""
    rows = sorted(set(changes))
    if rows:
        await conn.execute(
            "INSERT INTO number_holders (number_ref, since) SELECT * FROM unnest($1::text[], $2::timestamptz[]) "
            "ON CONFLICT DO NOTHING",
            [ref for ref, _ in rows],
            [at for _, at in rows],
        )
