"""The console's session table on the real PostgreSQL: a back-channel logout ends what its token names, and only the
sessions begun before the token was issued (a replayed token must not sign the person out of their next session)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.actions.operators import Operator
from services.console.sessions import ProviderLink, ProviderSecrets, SessionStore

pytestmark = pytest.mark.integration


def link(*, sid: bytes | None, sub: bytes) -> ProviderLink:
    return ProviderLink(
        sid_digest=sid,
        sub_digest=sub,
        acr=None,
        roles_read_at=datetime.now(UTC),
        secrets=ProviderSecrets(refresh_token=None, id_token=None, name="test"),
    )


async def test_a_logout_ends_only_the_sessions_begun_before_its_token(pg_pool: asyncpg.Pool) -> None:
    store = SessionStore(pg_pool, idle_timeout_s=3600, lifetime_s=86400)
    sid, sub, other_sub = secrets.token_bytes(32), secrets.token_bytes(32), secrets.token_bytes(32)
    operator = Operator("test-logout", "reader")
    for provider in (link(sid=sid, sub=sub), link(sid=None, sub=sub), link(sid=None, sub=other_sub)):
        await store.create(operator, credential=b"", locale="en", timezone="UTC", provider=provider)
    now = datetime.now(UTC)
    try:
        # A token issued (with the leeway) before these sessions began: replayed, it ends none of them.
        assert (
            await store.delete_provider_sessions(sid_digest=sid, sub_digest=sub, begun_before=now - timedelta(hours=1))
            == 0
        )
        assert (
            await store.delete_provider_sessions(sid_digest=None, sub_digest=sub, begun_before=now - timedelta(hours=1))
            == 0
        )
        # Issued after: the provider session's one session ends, then every session of the account, no one else's.
        later = now + timedelta(seconds=60)
        assert await store.delete_provider_sessions(sid_digest=sid, sub_digest=sub, begun_before=later) == 1
        assert await store.delete_provider_sessions(sid_digest=None, sub_digest=sub, begun_before=later) == 1
        left = await pg_pool.fetchval("SELECT count(*) FROM console_sessions WHERE provider_sub = $1", other_sub)
        assert left == 1
    finally:
        await pg_pool.execute("DELETE FROM console_sessions WHERE provider_sub = ANY($1::bytea[])", [sub, other_sub])
