"""One record never hides a conversation: on the real stack, a person's ordinary messages surround records holding
a lone surrogate escape (``\\ud83d``, half an emoji) in the profile name, a text, a business-scoped user id, an
edit's original id, a status's pricing category and a reaction emoji, one record whose plaintext is not JSON at all,
and one message nested 1,015 levels deep (within what the archive's decoders accept; FastAPI's encoder refused it).
Archived through the journal and the real archiver (the last two then re-sealed in place), the conversation reads in
full through the actions (messages, export), the CLI, the admin API and the console over HTTP: every record shown,
the lone surrogates as U+FFFD, the record that cannot be read as such, with its metadata.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from devtools import pipeline
from devtools.broker import create_topic
from devtools.pipeline import Person
from devtools.serving import serve_asgi
from services.actions.access import ArchiveAccess, open_access
from services.actions.layer import Actions, Operator
from services.console.factory import create_console_app
from services.console.settings import ConsoleSettings
from services.core.container import ContainerRecord, decode_container, encode_container
from services.core.crypto import seal_record
from services.core.identity import resolve_subject_refs
from services.core.index import binary_key
from services.core.plaintext import REPLACEMENT
from services.core.pseudonym import subject_ref
from services.governance.metrics import RetentionMetrics
from services.retention.api import create_admin_app
from services.retention.settings import RetentionSettings
from services.review.display import display
from services.review.export import write_export
from tests.helpers.reader_cases import ReaderCases
from tests.helpers.support import run_cli

pytestmark = pytest.mark.integration

HALF = "\ud83d"  # the high half of an emoji, alone
READER = ("test-reader", pipeline.READER_TOKEN)  # pipeline.retention_settings' tokens
DPO_BEARER = {"authorization": f"Bearer {pipeline.DPO_TOKEN}"}
NOT_JSON = b"this plaintext is not JSON at all"
# A message member nested this deep: its envelope is within the 1,024 levels ingest and the archive's decoders
# accept; orjson writes only 255, and FastAPI's encoder recurses once per level.
DEPTH = 1_015
ORDINARY = ["Bonjour, avant tout", "Texte ordinaire au milieu", "Au revoir, après tout"]


def webhook(person: Person, field: str, value: dict[str, Any]) -> bytes:
    """A webhook body as Meta may send it: JSON with every non-ASCII character escaped, a lone surrogate too."""
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": person.waba_id,
                "changes": [
                    {
                        "field": field,
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550001111",
                                "phone_number_id": person.phone_number_id,
                            },
                            **value,
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(body, ensure_ascii=True).encode()


def inbound(person: Person, wamid: str, ts: int, message: dict[str, Any], *, name: str = "Ana") -> bytes:
    return webhook(
        person,
        "messages",
        {
            "contacts": [{"profile": {"name": name}, "wa_id": person.wa_id}],
            "messages": [{"from": person.wa_id, "id": wamid, "timestamp": str(ts), **message}],
        },
    )


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def text(body: str) -> dict[str, Any]:
    return {"type": "text", "text": {"body": body}}


@contextlib.contextmanager
def deep_enough() -> Iterator[None]:
    """The standard library's JSON encoder recurses once per level: room for :data:`DEPTH`."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5 * DEPTH))
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


@dataclass
class Archived:
    person: Person
    prefix: str
    ordinary: list[str]  # event ids of the ordinary messages
    odd: list[str]  # event ids of the records with a lone surrogate
    unreadable: str  # event id of the record whose plaintext is not JSON
    deep: str  # event id of a message nested DEPTH levels deep


async def archive_odd_conversation(demo_env: dict[str, str], pool: asyncpg.Pool, access: ArchiveAccess) -> Archived:
    person = Person.fresh()
    t = int(time.time()) - 3600
    user_id = f"US.{uuid.uuid4().hex[:12]}{HALF}"
    ordinary = [
        inbound(person, "wamid.O1", t, text(ORDINARY[0])),
        inbound(person, "wamid.O2", t + 300, text(ORDINARY[1])),
        inbound(person, "wamid.O3", t + 900, text(ORDINARY[2])),
    ]
    odd = [
        inbound(person, "wamid.S1", t + 60, text("Mon nom est coupé"), name=f"Ana {HALF}"),
        inbound(person, "wamid.S2", t + 120, text(f"Un emoji coupé {HALF} ici")),
        webhook(
            person,
            "messages",
            {
                "contacts": [{"profile": {"name": "Ana"}, "wa_id": person.wa_id, "user_id": user_id}],
                "messages": [
                    {"from": person.wa_id, "from_user_id": user_id, "id": "wamid.S3", "timestamp": str(t + 180)}
                    | text("Envoyé avec mon identifiant")
                ],
            },
        ),
        inbound(
            person,
            "wamid.S4",
            t + 240,
            {
                "type": "edit",
                "edit": {"original_message_id": f"wamid.{HALF}gone", "message": text("Édition d'un message perdu")},
            },
        ),
        webhook(
            person,
            "smb_message_echoes",
            {
                "message_echoes": [
                    {"from": "15550001111", "to": person.wa_id, "id": "wamid.B1", "timestamp": str(t + 400)}
                    | text("Le prix est de 10 €")
                ]
            },
        ),
        webhook(
            person,
            "messages",
            {
                "statuses": [
                    {
                        "id": "wamid.B1",
                        "status": "delivered",
                        "timestamp": str(t + 410),
                        "recipient_id": person.wa_id,
                        "pricing": {"billable": True, "pricing_model": "PMP", "category": f"service{HALF}"},
                    }
                ]
            },
        ),
        inbound(
            person, "wamid.S5", t + 500, {"type": "reaction", "reaction": {"message_id": "wamid.O1", "emoji": HALF}}
        ),
    ]
    broken = inbound(person, "wamid.X1", t + 600, text("Ce texte sera illisible"))
    deep = inbound(person, "wamid.D1", t + 700, text("Très imbriqué"))
    bodies = [*ordinary, *odd, broken, deep]
    events = pipeline.events_of(bodies)
    by_body = {body: [e.event_id for e in pipeline.events_of([body])] for body in bodies}

    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="odd")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    await pipeline.produce_posts(bootstrap, topic, bodies)  # journaled as ingest does: the archiver splits them
    async with pipeline.running_archiver(
        pipeline.archiver_settings(demo_env, topic, dlq, access.bucket.settings.prefix)
    ):
        await pipeline.wait_indexed(pool, {e.event_id for e in events})

    (unreadable,) = by_body[broken]
    await seal_in_place(pool, access, unreadable, NOT_JSON)
    (deep_event,) = pipeline.events_of([deep])
    envelope = deep_event.as_dict()
    envelope["payload"]["nested"] = nested(DEPTH)
    with deep_enough():
        await seal_in_place(pool, access, deep_event.event_id, json.dumps(envelope).encode())
    return Archived(
        person,
        access.bucket.settings.prefix,
        [i for body in ordinary for i in by_body[body]],
        [i for body in odd for i in by_body[body]],
        unreadable,
        by_body[deep][0],
    )


async def seal_in_place(pool: asyncpg.Pool, access: ArchiveAccess, event_id: str, plaintext: bytes) -> None:
    """Replace an archived record's plaintext by ``plaintext``, sealed with its person's key where it is: a record
    whose bytes no decoder reads (the archiver never writes one; this is the read side's last resort)."""
    row = await pool.fetchrow(
        "SELECT object_key, record_index FROM archived_events WHERE event_id = $1", binary_key(event_id)
    )
    assert row is not None
    container = decode_container(await access.bucket.get(row["object_key"]))
    records = list(container.records)
    meta = records[row["record_index"]].meta
    assert meta.event_id == event_id
    dek = await access.keyring.key_for_reading(meta.subject_ref, meta.dek_id)
    assert dek is not None
    sealed = seal_record(plaintext, dek.aead(), event_id=meta.event_id, subject_ref=meta.subject_ref)
    records[row["record_index"]] = ContainerRecord(meta, sealed)
    blob = encode_container(records, source=container.source, created_at=container.created_at)
    await access.bucket.put(row["object_key"], blob)


@dataclass
class Stack:
    settings: RetentionSettings
    access: ArchiveAccess
    actions: Actions
    api: httpx.AsyncClient
    console_url: str
    cases: ReaderCases  # what the readers may read (closed when the test ends)


@pytest.fixture
async def stack(demo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    """The actions in-process, the admin API and the console served over HTTP, and the CLI's environment, on one
    test prefix."""
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    settings = pipeline.retention_settings(demo_env, prefix)
    monkeypatch.setenv("WA_RETENTION_S3__PREFIX", prefix)
    monkeypatch.setenv("WA_RETENTION_OPERATOR", "cli-operator-of-test-odd-records")

    async def opener() -> ArchiveAccess:
        return await open_access(settings)

    # The console with its own role and S3 identity (WA_CONSOLE_* of demo.env), the admin API with retention's.
    console_settings = ConsoleSettings(secure_cookies=False, idle_timeout_s=60, page_size=20)

    async def console_opener() -> ArchiveAccess:
        return await open_access(console_settings.archive_settings(settings))

    console = create_console_app(
        console_settings,
        settings,
        console_opener,
        registry=CollectorRegistry(),
        serve_ops=False,
    )
    access = await open_access(settings)
    try:
        async with (
            serve_asgi(create_admin_app(settings, opener, registry=CollectorRegistry())) as api_url,
            serve_asgi(console) as console_url,
            httpx.AsyncClient(base_url=api_url, timeout=60) as api,
        ):
            actions = Actions(access, RetentionMetrics(CollectorRegistry()))
            cases = ReaderCases(actions)
            try:
                yield Stack(settings, access, actions, api, console_url, cases)
            finally:
                await cases.close()
    finally:
        await access.close()


def check_messages(shown: list[dict[str, Any]], archived: Archived) -> None:
    """Every record is there (the status attached to its message, the rest as items), the odd ones as U+FFFD, the
    unreadable one with its metadata and why."""
    by_id = {m["event_id"]: m for m in shown}
    assert set(archived.ordinary) <= by_id.keys()
    assert [by_id[i]["payload"]["text"]["body"] for i in archived.ordinary] == ORDINARY
    assert by_id[archived.unreadable]["unreadable"] == "not JSON"
    assert by_id[archived.unreadable]["payload"] is None
    assert (by_id[archived.unreadable]["kind"], by_id[archived.unreadable]["type"]) == ("message", "text")
    assert by_id[archived.unreadable]["timestamp"] is not None
    status_id = archived.odd[5]
    items = set(archived.odd) - {status_id}
    assert items <= by_id.keys()
    assert all(by_id[i]["unreadable"] is None for i in [*archived.ordinary, *items])
    echo = by_id[archived.odd[4]]
    assert [s["status"] for s in echo["statuses"]] == ["delivered"]  # the status with the cut pricing category
    text_of = {i: json.dumps(by_id[i], ensure_ascii=False) for i in items}
    # The text, the user id, the edit's original id and the emoji are in what a message shows (the profile name is
    # in the envelope's contact, which the views leave out).
    assert all(REPLACEMENT in text_of[i] for i in [*archived.odd[1:4], archived.odd[6]])
    assert "Mon nom est coupé" in text_of[archived.odd[0]]
    assert f"Un emoji coupé {REPLACEMENT} ici" in text_of[archived.odd[1]]
    assert by_id[archived.deep]["payload"]["text"]["body"] == "Très imbriqué"
    assert len(shown) == len(archived.ordinary) + len(items) + 2


async def test_a_conversation_with_odd_records_reads_in_full_everywhere(
    stack: Stack, demo_env: dict[str, str], pg_pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    archived = await archive_odd_conversation(demo_env, pg_pool, stack.access)
    person = archived.person
    who = {"contact": person.wa_id, "phone_number_id": person.phone_number_id}
    reason = "lecture complète malgré des enregistrements abîmés"

    # The actions: the conversation and the subject-access export (the readers review the number's case).
    for reader in ("reader", READER[0]):
        await stack.cases.cover(reader, phone_number_id=person.phone_number_id)
    conversation = await stack.actions.messages(
        Operator("reader", "reader"), reason=reason, contact=person.wa_id, phone_number_id=person.phone_number_id
    )
    check_messages([m.to_json() for m in conversation.messages], archived)
    export = await stack.actions.export(
        Operator("dpo", "dpo"), reason=reason, contact=person.wa_id, phone_number_id=person.phone_number_id
    )
    check_messages(export.document()["messages"], archived)
    json_path, html_path = write_export(export.messages, tmp_path, formats=["json", "html"], request_ref="R-odd")
    check_messages(orjson.loads(json_path.read_bytes())["messages"], archived)
    page = html_path.read_text(encoding="utf-8")
    assert all(text in page for text in ORDINARY)
    assert f"[record {archived.unreadable} (message text) could not be read: not JSON]" in page

    # The admin API: HTTP 200, the same messages.
    answer = await stack.api.post("/v1/messages", json={**who, "reason": reason}, headers=DPO_BEARER)
    assert answer.status_code == 200, answer.text
    check_messages(orjson.loads(answer.content)["messages"], archived)
    # An export is a job (its files are checked in tests/integration/test_export_jobs.py): accepted at once.
    exported = await stack.api.post(
        "/v1/exports", json={**who, "reason": reason, "formats": ["json"]}, headers=DPO_BEARER
    )
    assert exported.status_code == 202, exported.text
    assert exported.headers["location"].startswith("/v1/exports/")
    # Not run here: failed, so that no export worker of another test takes it (they take the oldest queued job).
    for job in orjson.loads(exported.content)["jobs"]:
        await pg_pool.execute(
            "UPDATE export_jobs SET status = 'failed', error = 'not run by this test' WHERE job_id = $1::uuid",
            job["job_id"],
        )

    # The CLI: JSON lines and the table.
    argv = ["messages", "--contact", person.wa_id, "--phone-number-id", person.phone_number_id, "--reason", reason]
    code, out, err = await run_cli([*argv, "--format", "jsonl"], capsys)
    assert code == 0, err
    check_messages([orjson.loads(line) for line in out.splitlines()], archived)
    code, out, err = await run_cli([*argv, "--format", "table"], capsys)
    assert code == 0, err
    assert all(text in out for text in ORDINARY)
    assert f"Un emoji coupé {REPLACEMENT} ici" in out
    assert "could not be read: not JSON" in out
    code, out, err = await run_cli(
        ["export", "--contact", person.wa_id, "--reason", reason, "--out", str(tmp_path / "cli"), "--format", "json"],
        capsys,
    )
    assert code == 0, err
    check_messages(orjson.loads(Path(out.split()[-1]).read_bytes())["messages"], archived)

    # The console over HTTP: the reason, then the whole timeline (one page), HTTP 200.
    ref = subject_ref(stack.access.pepper, person.phone_number_id, person.wa_id)
    assert ref in await resolve_subject_refs(pg_pool, stack.access.pepper, person.wa_id, person.phone_number_id)
    async with httpx.AsyncClient(base_url=stack.console_url, timeout=60) as client:
        csrf = await sign_in(client)
        opened = await client.post("/conversation/reason", data={"csrf": csrf, "subject_ref": ref, "reason": reason})
        assert opened.status_code == 200, opened.text
    page = opened.text
    assert all(text in page for text in ORDINARY)
    assert f"Un emoji coupé {REPLACEMENT} ici" in page
    assert "Envoyé avec mon identifiant" in page
    assert "Edit of a message that is not in the archive" in page  # its original id was garbled
    assert "Édition d&#39;un message perdu" in page
    assert "Le prix est de 10 €" in page
    assert "This record could not be read (not JSON)." in page
    assert f"<li>message · text</li><li>{archived.unreadable}</li>" in page  # its kind, type and event id
    bubbles = re.findall(r'data-event="([0-9a-f]{32})"', page)
    reaction = archived.odd[6]  # attached to the message it reacts to, as the emoji U+FFFD
    assert set(bubbles) == {*archived.ordinary, *archived.odd[:5], archived.unreadable, archived.deep}
    assert reaction not in bubbles
    assert re.search(rf'class="reactions">.*{REPLACEMENT}</p>', page)
    assert (
        display(next(m for m in conversation.messages if m.event_id == reaction)).plain() == f"[reaction] {REPLACEMENT}"
    )


async def sign_in(client: httpx.AsyncClient) -> str:
    """Sign in as the reader; returns the CSRF token of the search page."""
    page = await client.get("/signin")
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
    assert token
    answer = await client.post(
        "/signin", data={"signin_token": token.group(1), "name": READER[0], "token": READER[1], "timezone": "UTC"}
    )
    assert answer.status_code == 303, answer.text
    search = await client.get("/search")
    found = re.search(r'name="csrf" value="([^"]+)"', search.text)
    assert found
    return found.group(1)


async def test_a_group_timeline_with_odd_records_reads_in_full(
    stack: Stack, demo_env: dict[str, str], pg_pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    business = Person.fresh()
    group_id = f"Y2FwaV9ncm91cDo{uuid.uuid4().hex}"
    alice, bob = ("1" + pipeline.digits(10) for _ in range(2))
    t = int(time.time()) - 3600

    def said(sender: str, wamid: str, body: str, ts: int) -> bytes:
        message = {"from": sender, "group_id": group_id, "id": wamid, "timestamp": str(ts)} | text(body)
        contact = {"profile": {"name": f"Participant {HALF}"}, "wa_id": sender}
        return webhook(business, "messages", {"contacts": [contact], "messages": [message]})

    bodies = [
        said(alice, "wamid.GA1", "Bonjour le groupe", t),
        said(bob, "wamid.GB1", f"Coupé {HALF} en deux", t + 60),
        said(alice, "wamid.GA2", "Ce message sera illisible", t + 120),
        said(bob, "wamid.GB2", "Au revoir le groupe", t + 180),
    ]
    ids = [e.event_id for e in pipeline.events_of(bodies)]
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="oddgroup")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    await pipeline.produce_posts(bootstrap, topic, bodies)
    settings = pipeline.archiver_settings(demo_env, topic, dlq, stack.access.bucket.settings.prefix)
    async with pipeline.running_archiver(settings):
        await pipeline.wait_indexed(pg_pool, set(ids))
    await seal_in_place(pg_pool, stack.access, ids[2], NOT_JSON)

    def check(messages: list[dict[str, Any]]) -> None:
        assert [m["event_id"] for m in messages] == ids  # in their place, none hidden
        assert [m["unreadable"] for m in messages] == [None, None, "not JSON", None]
        assert messages[1]["payload"]["text"]["body"] == f"Coupé {REPLACEMENT} en deux"
        assert messages[3]["payload"]["text"]["body"] == "Au revoir le groupe"

    reason = "fil de groupe avec des enregistrements abîmés"
    who = {"group_id": group_id, "phone_number_id": business.phone_number_id}
    await stack.cases.cover("reader", group_id=group_id)
    timeline = await stack.actions.group_messages(Operator("reader", "reader"), reason=reason, **who)
    check(timeline.to_json()["messages"])
    answer = await stack.api.post("/v1/groups/messages", json={**who, "reason": reason}, headers=DPO_BEARER)
    assert answer.status_code == 200, answer.text
    check(orjson.loads(answer.content)["messages"])
    argv = ["group-messages", "--group-id", group_id, "--phone-number-id", business.phone_number_id, "--reason", reason]
    code, out, err = await run_cli([*argv, "--format", "jsonl"], capsys)
    assert code == 0, err
    check([orjson.loads(line) for line in out.splitlines()])
    code, out, err = await run_cli([*argv, "--format", "table"], capsys)
    assert code == 0, err
    assert "Bonjour le groupe" in out
    assert f"Coupé {REPLACEMENT} en deux" in out
    assert "could not be read: not JSON" in out
    assert "Au revoir le groupe" in out
