"""Console sign-in that holds, against the real PostgreSQL: throttling per name and per address with a lockout
(counted across parallel attempts and replicas), refusals counted and logged without the token, sessions ended by
their absolute lifetime and by a revoked or downgraded credential, a role checked before a form is read."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from devtools import pipeline
from devtools.serving import serve_asgi
from services.actions.access import ArchiveAccess, open_access
from services.console.factory import create_console_app
from services.console.settings import ConsoleSettings
from services.core.vocabulary import Role
from services.retention.settings import AdminToken, RetentionSettings
from tests.helpers.support import answer_before_body

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Account:
    name: str
    token: str
    role: Role

    @staticmethod
    def fresh(role: Role = "reader") -> Account:
        return Account(f"person-{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(24), role)


@dataclass
class Console:
    url: str
    registry: CollectorRegistry

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def console_with(
    demo_env: dict[str, str], accounts: list[Account], **console_settings: float | int
) -> AsyncIterator[Console]:
    """A console (a replica, as far as the database is concerned) whose configuration holds ``accounts``."""
    base = pipeline.retention_settings(demo_env, f"test/{uuid.uuid4().hex[:8]}")
    retention: RetentionSettings = base.model_copy(
        update={"admin_tokens": {a.name: AdminToken(token=SecretStr(a.token), role=a.role) for a in accounts}}
    )
    registry = CollectorRegistry()

    settings = ConsoleSettings(secure_cookies=False, **console_settings)  # type: ignore[arg-type]
    archive = settings.archive_settings(retention)  # the console's own database role and S3 identity

    async def opener() -> ArchiveAccess:
        return await open_access(archive)

    app = create_console_app(settings, archive, opener, registry=registry, serve_ops=False)
    async with serve_asgi(app) as url:
        yield Console(url, registry)


def client_of(console: Console, address: str | None = None) -> httpx.AsyncClient:
    """A browser; ``address`` is the client address the console sees (X-Forwarded-For from 127.0.0.1, trusted as
    a proxy is), so that tests do not share the throttle of 127.0.0.1."""
    headers = {"x-forwarded-for": address or random_address()}
    return httpx.AsyncClient(base_url=console.url, timeout=30, headers=headers)


def random_address() -> str:
    return f"2001:db8::{secrets.randbelow(0xFFFF):x}:{secrets.randbelow(0xFFFF):x}"  # documentation range


async def try_sign_in(client: httpx.AsyncClient, name: str, token: str) -> httpx.Response:
    page = await client.get("/signin")
    form_token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
    assert form_token
    return await client.post("/signin", data={"signin_token": form_token.group(1), "name": name, "token": token})


@contextlib.asynccontextmanager
async def signed_in(console: Console, account: Account) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(console) as client:
        answer = await try_sign_in(client, account.name, account.token)
        assert (answer.status_code, answer.headers.get("location")) == (303, "/search"), answer.text
        yield client


def session_cookie(client: httpx.AsyncClient) -> str:
    cookie = client.cookies.get("wa_console_session")
    assert cookie is not None
    return cookie


async def session_rows(pool: asyncpg.Pool, cookie: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM console_sessions WHERE session_hash = sha256($1::text::bytea)", cookie
    )
    return count


async def test_sign_in_is_throttled_per_name_then_locked_out(
    demo_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    account = Account.fresh()
    caplog.set_level(logging.INFO, logger="wa_archive")
    async with console_with(demo_env, [account], signin_attempts_per_name=3, signin_lockout_s=600) as console:
        # Three wrong tokens, each from another address: the name's allowance is spent all the same.
        for _ in range(3):
            async with client_of(console) as client:
                wrong = await try_sign_in(client, account.name, secrets.token_urlsafe(24))
                assert wrong.status_code == 401
        # Locked out: even the right token is refused, without being checked, and the page says for how long.
        async with client_of(console) as client:
            locked = await try_sign_in(client, account.name, account.token)
            assert locked.status_code == 429
            assert 590 <= int(locked.headers["retry-after"]) <= 600
            assert "Too many sign-in attempts. Try again in 10 minutes." in locked.text
            assert "wa_console_session" not in locked.headers.get("set-cookie", "")
        # A token typed in the name field is not logged; an account's name is.
        async with client_of(console) as client:
            assert (await try_sign_in(client, account.token, "x")).status_code == 401
    assert console.sample("wa_console_sign_ins_total", outcome="refused") == 4
    assert console.sample("wa_console_sign_ins_total", outcome="locked") == 1
    assert console.sample("wa_console_refusals_total", status="401", reason="credentials") == 4
    assert console.sample("wa_console_refusals_total", status="429", reason="locked") == 1
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 5
    assert sum(getattr(r, "actor", None) == account.name for r in refusals) == 4
    logged = caplog.text + " ".join(str(vars(r)) for r in caplog.records)
    assert account.token not in logged


async def test_sign_in_is_throttled_per_address(demo_env: dict[str, str]) -> None:
    victim, other = Account.fresh(), Account.fresh()
    address = random_address()
    async with console_with(demo_env, [victim, other], signin_attempts_per_address=4) as console:
        # One client trying many names: four attempts, then the address is locked, whatever the name.
        for _ in range(4):
            async with client_of(console, address) as client:
                assert (await try_sign_in(client, f"guess-{uuid.uuid4().hex[:6]}", "x")).status_code == 401
        async with client_of(console, address) as client:
            assert (await try_sign_in(client, other.name, other.token)).status_code == 429
        # Another address is not affected; sign-ins that succeed do not use up an address's allowance.
        shared = random_address()
        for _ in range(6):
            async with client_of(console, shared) as client:
                assert (await try_sign_in(client, victim.name, victim.token)).status_code == 303


async def test_parallel_guesses_are_all_counted(demo_env: dict[str, str]) -> None:
    """Ten guesses at once for one name, allowance three: three are checked, seven refused (the attempt is counted
    in PostgreSQL before the credentials are checked, under a row lock)."""
    account = Account.fresh()
    async with console_with(demo_env, [account], signin_attempts_per_name=3) as console:

        async def guess() -> int:
            async with client_of(console) as client:
                return (await try_sign_in(client, account.name, secrets.token_urlsafe(24))).status_code

        statuses = await asyncio.gather(*(guess() for _ in range(10)))
    assert sorted(statuses) == [401] * 3 + [429] * 7


async def test_a_revoked_or_downgraded_token_ends_its_sessions(demo_env: dict[str, str], pg_pool: asyncpg.Pool) -> None:
    dpo = Account.fresh("dpo")
    rotated = Account(dpo.name, secrets.token_urlsafe(24), "dpo")
    downgraded = Account(dpo.name, dpo.token, "reader")
    async with console_with(demo_env, [dpo]) as before:
        for after_change in (rotated, downgraded):
            async with signed_in(before, dpo) as client:
                cookie = session_cookie(client)
                assert (await client.get("/dpo/holds")).status_code == 200
                # The configuration changes (a replica restarted with it): the next request ends the session.
                async with console_with(demo_env, [after_change]) as after:
                    ended = await client.get(f"{after.url}/dpo/holds")
                    assert ended.headers["location"] == "/signin?ended=1"
                    assert after.sample("wa_console_sessions_ended_total", reason="revoked") == 1
                assert await session_rows(pg_pool, cookie) == 0
                assert (await client.get("/search")).headers["location"] == "/signin?ended=1"


async def test_the_absolute_lifetime_ends_a_busy_session(demo_env: dict[str, str], pg_pool: asyncpg.Pool) -> None:
    account = Account.fresh()
    async with (
        console_with(demo_env, [account], session_lifetime_s=600, idle_timeout_s=300) as console,
        signed_in(console, account) as client,
    ):
        cookie = session_cookie(client)
        assert (await client.get("/search")).status_code == 200
        # Signed in 601 s ago and busy ever since (used a second ago): past its lifetime all the same.
        await pg_pool.execute(
            "UPDATE console_sessions SET created_at = now() - interval '601 seconds',"
            " last_seen_at = now() - interval '1 second' WHERE session_hash = sha256($1::text::bytea)",
            cookie,
        )
        assert (await client.get("/search")).headers["location"] == "/signin?ended=1"


async def test_the_role_is_checked_before_the_form_is_read(demo_env: dict[str, str]) -> None:
    reader = Account.fresh()
    async with console_with(demo_env, [reader]) as console, signed_in(console, reader) as client:
        port = urlsplit(console.url).port
        assert port is not None
        # A reader posting to a DPO page: 403 while the announced form (under the cap) is still unsent.
        # (In a thread: the console is served by this test's event loop.)
        answer = await asyncio.to_thread(
            answer_before_body,
            port,
            "POST /dpo/erasures HTTP/1.1\nHost: x\nContent-Type: application/x-www-form-urlencoded\n"
            f"Content-Length: 60000\nCookie: wa_console_session={session_cookie(client)}\n",
            timeout_s=5,
        )
        assert answer.status == 403
        assert console.sample("wa_console_refusals_total", status="403", reason="role") == 1
