"""The review console over HTTP, in-process against the real stack: sessions, CSRF, roles, the reason before any
content, the timeline's rendering of a crisis, media views, the DPO pages, and keyword search that is exact once
decrypted. The same flows in a real browser are tests/e2e/test_console_browser.py.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry

from devtools import pipeline
from devtools.broker import create_topic
from devtools.graph_api import FakeGraphApi
from devtools.pipeline import Person
from devtools.serving import serve_asgi
from services.actions.access import ArchiveAccess, open_access
from services.actions.layer import Actions, Operator
from services.console.factory import create_console_app
from services.console.settings import ConsoleSettings
from services.core.identity import resolve_subject_refs
from services.core.index import binary_keys
from services.core.keywords import words
from services.governance.erasure import erase_subject
from services.governance.metrics import RetentionMetrics
from services.retention.settings import RetentionSettings
from services.review.assembly import message_words
from services.review.conversation import load_conversation
from services.review.correspondent import readable_number
from services.review.search import SearchFilter
from tests.helpers.approvals import SECOND_DPO
from tests.helpers.archive_runs import NOW
from tests.helpers.erasure import readable
from tests.helpers.reader_cases import ReaderCases

pytestmark = pytest.mark.integration

READER = ("test-reader", pipeline.READER_TOKEN)
DPO = ("test-dpo", pipeline.DPO_TOKEN)
SECOND = ("test-dpo-2", pipeline.SECOND_DPO_TOKEN)
GRAPH_TOKEN = "graph-token-for-console-tests"
PHOTO = b"\x89PNG\r\n\x1a\n" + b"console test image " * 40
XSS = ['<script>alert("xss")</script>', "<img src=x onerror=alert(1)>"]


@dataclass
class Console:
    url: str
    settings: RetentionSettings
    registry: CollectorRegistry
    access: ArchiveAccess
    cases: ReaderCases  # what the reader may read (closed when the test ends)


@pytest.fixture
async def console(demo_env: dict[str, str]) -> AsyncIterator[Console]:
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    settings = pipeline.retention_settings(demo_env, prefix)
    registry = CollectorRegistry()

    # The console under test connects with its own role and S3 identity (WA_CONSOLE_* of demo.env); the tests set
    # up and check the archive with retention's (``access``).
    console_settings = ConsoleSettings(secure_cookies=False, idle_timeout_s=60, page_size=20)
    assert console_settings.pg.dsn.get_secret_value().startswith("postgresql://wa_console:")

    async def opener() -> ArchiveAccess:
        return await open_access(console_settings.archive_settings(settings))

    app = create_console_app(
        console_settings,
        settings,
        opener,
        registry=registry,
        serve_ops=False,
    )
    access = await open_access(settings)
    cases = ReaderCases(Actions(access, RetentionMetrics(CollectorRegistry())))
    try:
        async with serve_asgi(app) as url:
            yield Console(url, settings, registry, access, cases)
    finally:
        try:
            await cases.close()
        finally:
            await access.close()


def browser(console: Console, language: str = "en") -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=console.url, timeout=60, headers={"accept-language": language})


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, who: tuple[str, str], timezone: str = "Europe/Paris") -> str:
    """Sign in; returns the CSRF token of the search page."""
    page = await client.get("/signin")
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
    assert token
    answer = await client.post(
        "/signin",
        data={"signin_token": token.group(1), "name": who[0], "token": who[1], "timezone": timezone},
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/search"
    search = await client.get("/search")
    assert search.status_code == 200
    return csrf_of(search.text)


async def archive_crisis(demo_env: dict[str, str], pool: asyncpg.Pool, prefix: str, person: Person) -> None:
    """A customer's order confirmation deleted for everyone, a business price edited, a deleted image, XSS."""
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="console")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    t = NOW - 7200
    async with FakeGraphApi(token=GRAPH_TOKEN) as graph:
        digest = graph.add_media("console-photo", PHOTO)
        bodies = [
            pipeline.text_message(person, "wamid.C1", "Je confirme la commande 4471, facture Électricité", t),
            pipeline.revoke(person, "wamid.C1R", "wamid.C1", t + 180),
            pipeline.echo(person, "wamid.C2", "Le prix est de 1 200 € HT", t + 300),
            pipeline.status(person, "wamid.C2", "delivered", t + 310),
            pipeline.status(person, "wamid.C2", "read", t + 320),
            pipeline.edit(person, "wamid.C2E", "wamid.C2", "Le prix est de 12 000 € HT", t + 400),
            pipeline.image(
                person,
                "wamid.C3",
                t + 500,
                id="console-photo",
                mime_type="image/png",
                sha256=digest,
                caption="Photo du colis abîmé",
            ),
            pipeline.revoke(person, "wamid.C3R", "wamid.C3", t + 560),
            *(pipeline.text_message(person, f"wamid.X{i}", text, t + 600 + i) for i, text in enumerate(XSS)),
        ]
        events = pipeline.events_of(bodies)
        await pipeline.produce(bootstrap, topic, events)
        settings = pipeline.archiver_settings(demo_env, topic, dlq, prefix, graph=graph.graph_settings())
        async with pipeline.running_archiver(settings):
            await pipeline.wait_indexed(pool, {e.event_id for e in events})
            for _ in range(300):  # the image is fetched with its event; bounded wait for its row
                if await pool.fetchval(
                    "SELECT count(*) FROM archived_media WHERE event_id = ANY($1::bytea[]) AND status = 'archived'",
                    binary_keys(e.event_id for e in events),
                ):
                    break
                await asyncio.sleep(0.1)


async def test_sign_in_sessions_csrf_and_headers(console: Console, pg_pool: asyncpg.Pool) -> None:
    async with browser(console) as client:
        assert (await client.get("/search")).headers["location"] == "/signin?ended=1"
        page = await client.get("/signin")
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "unsafe-inline" not in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
        assert token

        # A forged sign-in (no double-submit token) and wrong credentials give no session.
        forged = await client.post("/signin", data={"name": READER[0], "token": READER[1]})
        assert forged.status_code == 403
        wrong = await client.post(
            "/signin", data={"signin_token": token.group(1), "name": READER[0], "token": "not-the-token"}
        )
        assert wrong.status_code == 401
        assert "The name or the token is wrong." in wrong.text
        assert "wa_console_session" not in wrong.headers.get("set-cookie", "")

        csrf = await sign_in(client, READER)
        cookie = next(c for c in client.cookies.jar if c.name == "wa_console_session")
        assert cookie.has_nonstandard_attr("HttpOnly")
        stored = await pg_pool.fetchval(
            "SELECT count(*) FROM console_sessions WHERE session_hash = sha256($1::text::bytea)", cookie.value
        )
        assert stored == 1  # only the hash of the cookie is kept

        # Every change needs the session's token, from this site.
        assert (await client.post("/search", data={"keywords": "commande"})).status_code == 403
        assert (await client.post("/search", data={"keywords": "x", "csrf": "forged"})).status_code == 403
        other_site = await client.post(
            "/search", data={"keywords": "commande", "csrf": csrf}, headers={"origin": "https://evil.example"}
        )
        assert other_site.status_code == 403
        assert (await client.post("/search", data={"keywords": "commande", "csrf": csrf})).status_code == 200
        refused = console.registry.get_sample_value("wa_console_refused_forms_total") or 0
        assert refused >= 4

        # The reader is not offered the DPO pages, and gets 403 on them.
        search = await client.get("/search")
        assert "/dpo/" not in search.text
        for path in ("/dpo/holds", "/dpo/erasures", "/dpo/audit", "/dpo/retention"):
            assert (await client.get(path)).status_code == 403, path

        # Idle too long: signed out.
        await pg_pool.execute(
            "UPDATE console_sessions SET last_seen_at = now() - interval '2 minutes'"
            " WHERE session_hash = sha256($1::text::bytea)",
            cookie.value,
        )
        assert (await client.get("/search")).headers["location"] == "/signin?ended=1"

    async with browser(console) as client:
        csrf = await sign_in(client, READER)
        assert (await client.post("/signout", data={"csrf": csrf})).headers["location"] == "/signin?out=1"
        assert (await client.get("/search")).status_code == 303
    async with browser(console, "fr-FR,fr;q=0.9,en;q=0.5") as client:
        assert "Connexion" in (await client.get("/signin")).text
        assert '<html lang="fr">' in (await client.get("/signin")).text


async def test_crisis_search_reason_timeline_media_and_audit(
    console: Console, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    person = Person.fresh()
    await archive_crisis(demo_env, pg_pool, console.settings.s3.prefix, person)
    await console.cases.cover(READER[0], phone_number_id=person.phone_number_id)
    (ref,) = await resolve_subject_refs(pg_pool, console.access.pepper, person.wa_id, person.phone_number_id)
    reason = f"litige commande 4471 {uuid.uuid4().hex[:6]}"
    async with browser(console, "fr") as client:
        csrf = await sign_in(client, READER)
        # Words without accents find the message; the result shows metadata only.
        found = await client.post(
            "/search", data={"csrf": csrf, "keywords": "facture electricite", "phone_number_id": person.phone_number_id}
        )
        assert found.status_code == 200
        assert ref in found.text
        assert "supprimé pour tous" in found.text  # the deletion badge
        assert "facture Électricité" not in found.text
        assert "commande 4471" not in found.text
        deleted_only = await client.post(
            "/search", data={"csrf": csrf, "phone_number_id": person.phone_number_id, "deleted_only": "1"}
        )
        assert deleted_only.text.count('class="hit"') == 2  # the order confirmation and the image

        # Opening asks for a reason and shows nothing before it; a reason that is too short is refused.
        asked = await client.post("/conversation", data={"csrf": csrf, "subject_ref": ref, "keywords": "electricite"})
        assert "Pourquoi ouvrez-vous cette conversation" in asked.text
        assert "4471" not in asked.text
        assert "Test Person" not in asked.text  # nor who it is with
        assert person.wa_id not in asked.text
        assert "prix" not in asked.text
        assert "colis" not in asked.text
        assert await pg_pool.fetchval("SELECT count(*) FROM audit_log WHERE subject_ref = $1", ref) == 0
        short = await client.post("/conversation/reason", data={"csrf": csrf, "subject_ref": ref, "reason": "x"})
        assert short.status_code == 400
        assert "4471" not in short.text

        opened = await client.post(
            "/conversation/reason",
            data={"csrf": csrf, "subject_ref": ref, "keywords": "electricite", "reason": reason, "case_ref": "CASE-9"},
        )
        assert opened.status_code == 200, opened.text
        page = opened.text
        # Who it is with, from the decrypted records: the profile name, the number, the business number.
        assert '<h1><bdi class="person">Test Person</bdi></h1>' in page
        assert f'<bdi dir="ltr">{readable_number(person.wa_id)}</bdi>' in page
        assert f"+1 555-000-1111 (identifiant du numéro {person.phone_number_id})" in page  # in French
        # The deleted original, with who deleted it and when; the edited price's current text and its history.
        assert "Je confirme la commande 4471, facture Électricité" in page
        assert "Supprimé pour tous par le client à" in page
        assert "(3 minutes après l&#39;envoi)" in page
        assert "Le prix est de 12 000 € HT" in page
        assert "Le prix est de 1 200 € HT" in page
        assert "Modifié 1 fois" in page
        assert "✓✓" in page  # read ticks of the business message
        # The keyword hit is the highlighted anchor.
        anchor = re.search(r'class="bubble [^"]*anchor[^"]*"\s+id="m-([0-9a-f]+)"', page)
        assert anchor
        assert "matched" in page
        # XSS arrives as text.
        assert "&lt;script&gt;alert(&#34;xss&#34;)&lt;/script&gt;" in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page
        assert "<script>alert" not in page
        assert "<img src=x" not in page
        # The image is decrypted on demand, each view audited.
        media_url = re.search(r'<img src="(/media/[0-9a-f]{32})"', page)
        assert media_url
        served = await client.get(media_url.group(1))
        assert served.status_code == 200
        assert served.content == PHOTO
        assert served.headers["content-length"] == str(len(PHOTO))  # streamed, its length announced
        assert served.headers["cache-control"] == "no-store"
        # The reason is kept for the rest of the visit: a second open shows the timeline at once.
        again = await client.post("/conversation", data={"csrf": csrf, "subject_ref": ref})
        assert "Je confirme la commande 4471" in again.text
        # A media file of a conversation not opened in this session is not served.
        async with browser(console) as stranger:
            await sign_in(stranger, READER)
            assert (await stranger.get(media_url.group(1))).status_code == 404

    rows = await pg_pool.fetch(
        "SELECT actor, action, reason FROM audit_log WHERE subject_ref = $1 ORDER BY audit_id", ref
    )
    # Opening at the keyword hit: the candidates checked for the words, then the rest of the page; the photo; the
    # second open. Every row is the reader's, with the reason and case given once.
    assert [(r["actor"], r["action"]) for r in rows] == [
        ("test-reader", "retrieval"),
        ("test-reader", "retrieval"),
        ("test-reader", "media"),
        ("test-reader", "retrieval"),
    ]
    assert {r["reason"] for r in rows} == {f"{reason} [CASE-9]"}

    # The DPO sees those rows, filtered by pseudonym.
    async with browser(console) as client:
        csrf = await sign_in(client, DPO)
        audit = await client.post("/dpo/audit", data={"csrf": csrf, "subject_ref": ref})
        assert audit.status_code == 200
        assert audit.text.count('class="audit-row"') == 4
        assert reason in audit.text
        for path in ("/dpo/holds", "/dpo/erasures", "/dpo/retention"):
            assert (await client.get(path)).status_code == 200, path


async def test_dpo_holds_and_erasure_requests(
    console: Console, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    person = Person.fresh()
    await archive_crisis(demo_env, pg_pool, console.settings.s3.prefix, person)
    case = f"CASE-{uuid.uuid4().hex[:6]}"
    request_ref = f"DSR-{uuid.uuid4().hex[:6]}"
    async with browser(console) as client:
        csrf = await sign_in(client, DPO)
        placed = await client.post(
            "/dpo/holds",
            data={"csrf": csrf, "scope": "contact", "case_ref": case, "contact": person.wa_id},
        )
        assert placed.status_code == 200
        assert f"Hold placed: {case}." in placed.text
        hold_id = await pg_pool.fetchval("SELECT hold_id::text FROM legal_holds WHERE case_ref = $1", case)
        # Requested in the console by one DPO, approved in the console by another, carried out by the console.
        actions = Actions(console.access, RetentionMetrics(CollectorRegistry()))
        asked = await client.post(
            "/dpo/erasures",
            data={"csrf": csrf, "contact": person.wa_id, "request_ref": request_ref, "reason": "asked by e-mail"},
        )
        assert f"Erasure {request_ref} requested" in asked.text
        (erasure,) = [r for r in await actions.approvals(SECOND_DPO) if r.target.get("request_ref") == request_ref]
        assert erasure.requested_by == DPO[0]
        async with browser(console) as second:
            second_csrf = await sign_in(second, SECOND)
            assert request_ref in (await second.get("/approvals")).text
            decided = await second.post(
                f"/approvals/{erasure.request_id}/approve", data={"csrf": second_csrf, "reason": "ticket checked"}
            )
            assert "Approved and carried out: erasing a person" in decided.text
            assert (await actions.approval(SECOND_DPO, erasure.request_id)).outcome["status"] == "blocked"  # type: ignore[index]
            asked = await client.post(
                "/dpo/holds/release", data={"csrf": csrf, "hold_id": hold_id, "reason": "the case is settled"}
            )
            assert "Release requested" in asked.text
            (release,) = [r for r in await actions.approvals(SECOND_DPO) if r.target.get("hold_id") == hold_id]
            own = await client.post(f"/approvals/{release.request_id}/approve", data={"csrf": csrf, "reason": "mine"})
            assert own.status_code == 403  # never one's own request
            decided = await second.post(
                f"/approvals/{release.request_id}/approve", data={"csrf": second_csrf, "reason": "settled indeed"}
            )
            assert "Approved and carried out: releasing a legal hold" in decided.text
        # The keys are destroyed at once; the console's S3 identity may not write the erasure log nor delete the
        # key copies, so the request stays in progress until the retention service finishes it.
        outcome = (await actions.approval(SECOND_DPO, release.request_id)).outcome
        assert outcome is not None
        assert outcome["erasures"] == [{"request_ref": request_ref, "status": "in_progress"}]
        assert await readable(console.access, person) == []
        finished = await actions.finish_erasures(Operator("scheduler", "dpo"))
        # (The shared database may hold other tests' requests in progress: they are finished too.)
        assert (request_ref, "completed") in [(e.request_ref, e.status) for e in finished]
        listing = await client.get("/dpo/erasures")
        assert request_ref in listing.text
        dry = await client.post("/dpo/retention", data={"csrf": csrf})
        assert dry.status_code == 200
        assert 'id="objects"' in dry.text


async def test_keyword_hits_are_exact_once_decrypted(
    console: Console, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    """Candidates from the blind index, checked after decryption, equal a brute-force decrypt-and-match over the
    same archive; an erased person's words no longer match, a held person's still do."""
    number = pipeline.digits(15)
    waba = pipeline.digits(15)
    people = [Person(waba, number, "1" + pipeline.digits(10)) for _ in range(4)]
    texts = [
        "Remboursement de la facture d'électricité",
        "Code promo NOEL pour la commande",
        "Où est ma commande ?",
        "Refund the electricity bill please",
        "Le code promo ne marche pas, remboursement svp",
        "Merci, bonne journée",
    ]
    bodies = [
        pipeline.text_message(p, f"wamid.K{i}-{j}", texts[(i + j) % len(texts)], NOW - 3600 + 10 * (i * 10 + j))
        for i, p in enumerate(people)
        for j in range(3)
    ]
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="console-kw")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    await pipeline.archive_bodies(demo_env, pg_pool, topic, dlq, console.settings.s3.prefix, bodies)
    actions = Actions(console.access, RetentionMetrics(CollectorRegistry()))
    operator = Operator("test-dpo", "dpo")
    queries = ["remboursement", "ELECTRICITE", "code promo", "commande", "refund electricity", "promo merci", "xyzzy"]

    async def decrypted(person: Person) -> list[str]:
        return [
            m.event_id
            for m in (
                await load_conversation(
                    console.access.pool,
                    console.access.reader,
                    console.access.pepper,
                    contact=person.wa_id,
                    phone_number_id=number,
                    actor="test-brute-force",
                    reason="keyword exactness test",
                )
            ).messages
        ]

    async def through_the_index(query: str) -> set[str]:
        hits = await actions.search(operator, SearchFilter(phone_number_id=number, keywords=query))
        found: set[str] = set()
        for ref in {hit.subject_ref for hit in hits if hit.subject_ref}:
            # As the console opens a hit: the page at the first message with the words, and which messages have them.
            page = await actions.conversation_page(
                operator, subject_ref=ref, reason="keyword exactness test", page_size=100, keywords=query
            )
            found.update(page.matched)
        return found

    async def brute_force(query: str, among: list[Person]) -> set[str]:
        wanted = words(query)
        found: set[str] = set()
        for person in among:
            conversation = await load_conversation(
                console.access.pool,
                console.access.reader,
                console.access.pepper,
                contact=person.wa_id,
                phone_number_id=number,
                actor="test-brute-force",
                reason="keyword exactness test",
            )
            found.update(m.event_id for m in conversation.messages if wanted <= message_words(m))
        return found

    for query in queries:
        assert await through_the_index(query) == await brute_force(query, people), query
    assert await brute_force("remboursement", people)  # the queries do find something

    # Hold one person, erase two: the held one's words still match, the erased one's no longer do.
    held, erased = people[0], people[1]
    await actions.create_hold(operator, scope="contact", case_ref=f"kw-{uuid.uuid4().hex[:6]}", contact=held.wa_id)
    erased_messages = set(await decrypted(erased))
    for person in (held, erased):
        await erase_subject(
            console.access.pool,
            console.access.keyring,
            console.access.bucket,
            console.access.pepper,
            contact=person.wa_id,
            phone_number_id=number,
            request_ref=f"kw-{uuid.uuid4().hex[:6]}",
            actor="test-dpo",
        )
    for query in queries:
        found = await through_the_index(query)
        assert not found & erased_messages, query
        assert found == await brute_force(query, [people[0], *people[2:]]), query


async def test_a_long_conversation_is_read_a_page_at_a_time(
    console: Console, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    """Pages of 20 (the fixture's page size): the newest first, the one holding the keyword hit when searched, and
    only the page's records decrypted (and counted in the audit row)."""
    person = Person.fresh()
    bodies = []
    for n in range(45):
        wamid = f"wamid.P{n}"
        text = "Le remboursement de la facture" if n == 4 else f"message ordinaire numéro {n}"
        bodies.append(pipeline.echo(person, wamid, text, NOW - 5000 + 10 * n))
        bodies.append(pipeline.status(person, wamid, "delivered", NOW - 5000 + 10 * n + 1))
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="console-pages")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    events = await pipeline.archive_bodies(demo_env, pg_pool, topic, dlq, console.settings.s3.prefix, bodies)
    (ref,) = await resolve_subject_refs(pg_pool, console.access.pepper, person.wa_id, person.phone_number_id)
    await console.cases.cover(READER[0], subject_ref=ref)
    async with browser(console) as client:
        csrf = await sign_in(client, READER)
        newest = await client.post(
            "/conversation/reason", data={"csrf": csrf, "subject_ref": ref, "reason": "pagination test"}
        )
        assert "Messages 41–45 of 45" in newest.text
        assert newest.text.count('class="bubble ') == 5
        assert 'id="older"' in newest.text
        assert 'id="newer"' not in newest.text
        older = await client.post("/conversation", data={"csrf": csrf, "subject_ref": ref, "page": "1"})
        assert "Messages 21–40 of 45" in older.text
        assert "message ordinaire numéro 20" in older.text
        assert "message ordinaire numéro 40" not in older.text
        hit = await client.post(
            "/conversation", data={"csrf": csrf, "subject_ref": ref, "keywords": "remboursement facture"}
        )
        assert "Messages 1–20 of 45" in hit.text
        anchored = re.search(r'class="bubble [^"]*anchor[^"]*"\s+id="m-[0-9a-f]+"[^>]*>(.*?)</li>', hit.text, re.S)
        assert anchored
        assert "Le remboursement de la facture" in anchored.group(1)
        assert hit.text.count("badge match") == 1
        # A hit on a status opens the page of its message, at that message.
        status_of_p4 = next(e for e in events if e.kind == "status" and e.message_id == "wamid.P4")
        message_p4 = next(e for e in events if e.kind == "echo" and e.message_id == "wamid.P4")
        at_status = await client.post(
            "/conversation", data={"csrf": csrf, "subject_ref": ref, "event_id": status_of_p4.event_id}
        )
        assert "Messages 1–20 of 45" in at_status.text
        assert re.search(rf'class="bubble [^"]*anchor[^"]*"\s+id="m-{message_p4.event_id}"', at_status.text)
    counts = await pg_pool.fetch(
        "SELECT record_count FROM audit_log WHERE subject_ref = $1 AND action = 'retrieval' ORDER BY audit_id", ref
    )
    # A page's messages and their statuses, not the 90 records of the whole conversation; a page that does not hold
    # the newest echo reads it too (one record), for the business number of the header.
    figures = [r["record_count"] for r in counts]
    assert figures[:2] == [10, 41]
    # At the keyword hit: the candidates (the person's messages in the objects holding both words) are counted and
    # decrypted first, then what the page adds (its statuses, messages that were no candidate).
    keyword_check, rest, at_status = figures[2:]
    assert at_status == 41  # the first page again: its 20 messages, their 20 statuses and the newest echo
    assert 1 <= keyword_check <= 45
    assert 20 <= rest <= 41
    assert keyword_check + rest < 90
