"""Erasing a person and reading what is left of them."""

from __future__ import annotations

import uuid

import asyncpg

from devtools.pipeline import Person
from services.actions.access import ArchiveAccess
from services.governance.erasure import erase_subject
from services.review.conversation import load_conversation


async def readable(access: ArchiveAccess, person: Person) -> list[str]:
    """The wamids of the person's messages that can be read, by every pseudonym of theirs."""
    conversation = await load_conversation(
        access.pool,
        access.reader,
        access.pepper,
        contact=person.wa_id,
        phone_number_id=None,
        actor="test",
        reason="erasure finality test",
    )
    return sorted(m.message_id or "" for m in conversation.messages)


async def erase(access: ArchiveAccess, person: Person) -> None:
    outcome = await erase_subject(
        access.pool,
        access.keyring,
        access.bucket,
        access.pepper,
        contact=person.wa_id,
        phone_number_id=None,
        request_ref=f"GDPR-{uuid.uuid4().hex[:8]}",
        actor="dpo",
    )
    assert outcome.status == "completed"


async def tombstones(pool: asyncpg.Pool, event_ids: list[str]) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM erased_events WHERE event_id = ANY($1::text[])", event_ids)
    return count
