"""Console sign-in through the real Keycloak (deploy/local/stack.sh part ``keycloak``), driven over HTTP with
Keycloak's own forms posted (tests/helpers/keycloak.py): a person signs in and is named in the header, a person with
no mapped role is told so, removing a person from the DPO group takes the DPO pages away within the re-read delay,
Keycloak's back-channel logout ends the console session, and the erasure page asks for the OTP step-up first.

One console for the module, on 127.0.0.1:8083: the realm's redirect and back-channel logout addresses name that
port. Each test signs in a person of its own (``temporary_user``), so the shared demo people stay as they are.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry

from devtools import pipeline
from devtools.serving import serve_asgi
from services.actions.access import ArchiveAccess, open_access
from services.console.factory import create_console_app
from services.console.settings import ConsoleSettings
from tests.helpers.keycloak import Keycloak, KeycloakAdmin, TemporaryUser, browser, login_code, temporary_user

pytestmark = [pytest.mark.integration, pytest.mark.realm]


def keycloak_is_up(demo_env: dict[str, str]) -> None:
    """Fail (not skip) when Keycloak is not running: a skipped sign-in test proves nothing."""
    try:
        socket.create_connection(("127.0.0.1", int(demo_env["WA_KEYCLOAK_PORT"])), timeout=1).close()
    except OSError:
        pytest.fail("Keycloak is not listening: run `make stack-up` (stack.sh part keycloak) first", pytrace=False)


CONSOLE_PORT = 8083  # the realm's redirect URI and back-channel logout URL say 127.0.0.1:8083
REREAD_S = 1.0


@dataclass
class Console:
    url: str
    registry: CollectorRegistry

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def keycloak(demo_env: dict[str, str]) -> Keycloak:
    keycloak_is_up(demo_env)
    return Keycloak.from_env(demo_env)


@pytest.fixture(scope="module")
async def admin(keycloak: Keycloak) -> AsyncIterator[KeycloakAdmin]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield KeycloakAdmin(http, keycloak)


@pytest.fixture(scope="module")
async def console(demo_env: dict[str, str], migrated: None) -> AsyncIterator[Console]:
    retention = pipeline.retention_settings(demo_env, f"test/{uuid.uuid4().hex[:8]}")
    settings = ConsoleSettings(secure_cookies=False)
    assert settings.oidc is not None, "demo.env configures the console's OIDC client"
    settings = settings.model_copy(update={"oidc": settings.oidc.model_copy(update={"roles_reread_s": REREAD_S})})
    archive = settings.archive_settings(retention)

    async def opener() -> ArchiveAccess:
        return await open_access(archive)

    registry = CollectorRegistry()
    app = create_console_app(settings, archive, opener, registry=registry, serve_ops=False)
    async with serve_asgi(app, port=CONSOLE_PORT) as url:
        yield Console(url, registry)


async def sign_in(
    client: httpx.AsyncClient, console: Console, person: TemporaryUser, *, back: str = "/search"
) -> httpx.Response:
    """Through Keycloak's login page; returns the console's answer to the callback."""
    start = await client.get(f"{console.url}/oidc/signin", params={"back": back})
    assert start.status_code == 303, start.text
    redirect = await login_code(client, start.headers["location"], username=person.username, password=person.password)
    return await client.get(redirect.location)


def moves_on_to(page: httpx.Response) -> str:
    """Where the callback's page sends the browser (its meta refresh)."""
    found = re.search(r'http-equiv="refresh" content="0; url=([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


async def test_a_person_signs_in_and_loses_the_dpo_pages_when_removed_from_the_dpo_group(
    console: Console, admin: KeycloakAdmin, pg_pool: asyncpg.Pool
) -> None:
    async with temporary_user(admin, groups=["dpo", "readers"]) as person, browser() as client:
        callback = await sign_in(client, console, person)
        assert callback.status_code == 200
        assert moves_on_to(callback) == "/search"
        search = await client.get(f"{console.url}/search")
        assert search.status_code == 200
        first, last = person.username.split(".")
        who = re.search(r'<span class="who">([^<]*)</span>', search.text)
        assert who, search.text
        assert who.group(1) == f"Signed in as {first.capitalize()} {last.capitalize()} (dpo)"
        assert (await client.get(f"{console.url}/dpo/holds")).status_code == 200
        # The audit log's actor is the provider's username; nothing of the provider is in clear in the row.
        row = await pg_pool.fetchrow(
            "SELECT role, sealed, provider_sub, provider_sid FROM console_sessions WHERE actor = $1", person.username
        )
        assert row is not None
        assert row["role"] == "dpo"
        assert b"eyJ" not in row["sealed"]  # no JWT (ID token, refresh token) in clear
        assert last.capitalize().encode() not in row["sealed"]
        assert len(row["provider_sub"]) == 32
        assert len(row["provider_sid"]) == 32

        await admin.remove_from_group(person.username, "dpo")
        removed_at = time.monotonic()
        while (holds := await client.get(f"{console.url}/dpo/holds")).status_code == 200:
            assert time.monotonic() - removed_at < REREAD_S + 2, "the DPO pages stayed after the re-read delay"
            await asyncio.sleep(0.2)
        took = time.monotonic() - removed_at
        assert holds.status_code == 403
        assert "This page is for the data protection officer." in holds.text
        search = await client.get(f"{console.url}/search")
        assert "(reader)" in search.text  # still signed in, as a reader now
    print(f"DPO pages gone {took:.2f} s after the removal (re-read every {REREAD_S} s)")


async def test_a_person_with_no_mapped_role_is_told_so_in_their_language(
    console: Console, admin: KeycloakAdmin
) -> None:
    async with temporary_user(admin, groups=[]) as person, browser() as client:
        client.headers["accept-language"] = "fr"
        callback = await sign_in(client, console, person)
        assert callback.status_code == 403
        assert f"Vous êtes connecté·e en tant que {person.username}, mais vous n’avez aucun rôle" in callback.text
        assert "wa_console_session" not in client.cookies
    assert console.sample("wa_console_sign_ins_total", outcome="no_role") >= 1


async def test_a_back_channel_logout_ends_the_console_session(
    console: Console, admin: KeycloakAdmin, pg_pool: asyncpg.Pool
) -> None:
    ended = console.sample("wa_console_sessions_ended_total", reason="logout")
    async with temporary_user(admin, groups=["readers"]) as person, browser() as client:
        assert (await sign_in(client, console, person)).status_code == 200
        assert (await client.get(f"{console.url}/search")).status_code == 200
        sessions = "SELECT count(*) FROM console_sessions WHERE actor = $1"
        assert await pg_pool.fetchval(sessions, person.username) == 1
        # Keycloak posts the logout token to /oidc/backchannel-logout before its admin call answers.
        await admin.logout_user(person.username)
        assert await pg_pool.fetchval(sessions, person.username) == 0
        assert console.sample("wa_console_sessions_ended_total", reason="logout") == ended + 1
        gone = await client.get(f"{console.url}/search")
        assert (gone.status_code, gone.headers["location"]) == (303, "/signin?ended=1")


async def test_a_forged_logout_token_is_refused(console: Console) -> None:
    async with httpx.AsyncClient(base_url=console.url) as client:
        answer = await client.post("/oidc/backchannel-logout", data={"logout_token": "eyJhbGciOiJub25lIn0.e30."})
    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_request"}


async def test_the_erasure_page_asks_for_the_otp_step_up_then_opens(
    console: Console, admin: KeycloakAdmin, pg_pool: asyncpg.Pool
) -> None:
    async with temporary_user(admin, groups=["dpo"], with_totp=True) as person, browser() as client:
        assert (await sign_in(client, console, person)).status_code == 200
        refused = await client.get(f"{console.url}/dpo/erasures")
        assert (refused.status_code, refused.headers["location"]) == (303, "/oidc/step-up?back=%2Fdpo%2Ferasures")
        to_keycloak = await client.get(f"{console.url}{refused.headers['location']}")
        assert to_keycloak.status_code == 303
        assert "acr_values=mfa" in to_keycloak.headers["location"]
        redirect = await login_code(
            client,
            to_keycloak.headers["location"],
            username=person.username,
            password=person.password,
            totp_secret=person.totp_secret,
        )
        assert redirect.pages == ["otp"]  # Keycloak's session had the password: only the second factor is asked
        callback = await client.get(redirect.location)
        assert callback.status_code == 200
        assert moves_on_to(callback) == "/dpo/erasures"
        erasures = await client.get(f"{console.url}/dpo/erasures")
        assert erasures.status_code == 200
        assert "Erasure requests" in erasures.text
        acrs = await pg_pool.fetch("SELECT acr FROM console_sessions WHERE actor = $1", person.username)
        assert [r["acr"] for r in acrs] == ["mfa"]  # the stepped-up session replaced the first one


async def test_a_replayed_or_forged_callback_signs_nobody_in(console: Console, keycloak: Keycloak) -> None:
    async with browser() as client:
        start = await client.get(f"{console.url}/oidc/signin")
        redirect = await login_code(
            client, start.headers["location"], username="reader.chloe", password=keycloak.password("reader.chloe")
        )
        assert (await client.get(redirect.location)).status_code == 200
        client.cookies.delete("wa_console_session")
        # The same callback again (its code and state): the pending sign-in is spent.
        replayed = await client.get(redirect.location)
        assert replayed.status_code == 400
        assert "This sign-in has expired or was started in another window." in replayed.text
        assert "wa_console_session" not in client.cookies
    async with browser() as client:  # a callback this browser never started
        forged = await client.get(f"{console.url}/oidc/callback", params={"code": "x", "state": "y"})
        assert forged.status_code == 400
