"""Audit before decrypt (services/core/audit.py audited_decrypt), against the real PostgreSQL: the rows are
committed before anything is decrypted, stay when the decryption fails, and nothing is decrypted without a reason."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from services.core.audit import Disclosure, audited_decrypt
from services.core.refusals import ReasonRequired

pytestmark = pytest.mark.integration


async def rows_of(pool: asyncpg.Pool, actor: str) -> list[tuple[str, str, int, str]]:
    """Read on another connection: only committed rows are seen."""
    rows = await pool.fetch(
        "SELECT subject_ref, action, record_count, details::text AS details FROM audit_log WHERE actor = $1"
        " ORDER BY subject_ref",
        actor,
    )
    return [(r["subject_ref"], r["action"], r["record_count"], r["details"]) for r in rows]


async def test_the_rows_are_committed_before_the_decryption_runs(pg_pool: asyncpg.Pool) -> None:
    actor = f"audit-test-{uuid.uuid4().hex[:8]}"
    disclosure = Disclosure(
        actor=actor, action="retrieval", reason="ticket 7", records={"b" * 64: 2, "a" * 64: 1}, details={"group": True}
    )
    seen: list[list[tuple[str, str, int, str]]] = []

    async def decrypt() -> str:
        seen.append(await rows_of(pg_pool, actor))
        return "plaintext"

    async with pg_pool.acquire() as conn:
        assert await audited_decrypt(conn, disclosure, decrypt) == "plaintext"
    expected = [("a" * 64, "retrieval", 1, '{"group": true}'), ("b" * 64, "retrieval", 2, '{"group": true}')]
    assert seen == [expected]


async def test_a_failed_decryption_leaves_its_rows(pg_pool: asyncpg.Pool) -> None:
    actor = f"audit-test-{uuid.uuid4().hex[:8]}"
    disclosure = Disclosure(actor=actor, action="media", reason="ticket 8", records={"c" * 64: 1})

    async def decrypt() -> None:
        raise RuntimeError("the bucket is down")

    async with pg_pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            await audited_decrypt(conn, disclosure, decrypt)
    assert await rows_of(pg_pool, actor) == [("c" * 64, "media", 1, "{}")]


@pytest.mark.parametrize("reason", ["", "  ", "ok"])
async def test_no_reason_no_row_and_no_decryption(pg_pool: asyncpg.Pool, reason: str) -> None:
    actor = f"audit-test-{uuid.uuid4().hex[:8]}"
    called: list[bool] = []

    async def decrypt() -> None:
        called.append(True)

    disclosure = Disclosure(actor=actor, action="retrieval", reason=reason, records={"d" * 64: 1})
    async with pg_pool.acquire() as conn:
        with pytest.raises(ReasonRequired):
            await audited_decrypt(conn, disclosure, decrypt)
    assert (called, await rows_of(pg_pool, actor)) == ([], [])
