"""A record the stores refuse is archived or dead-lettered alone, and never stalls the records behind it.

Each case is a signed webhook, sent through ingest as Meta would, carrying a value that PostgreSQL (or a metric
label) cannot hold as it is: NUL, a lone surrogate, an over-long id, a number beyond the calendar. An ordinary
message of the same person follows it on the same partition (the topic has one), and must be archived within the
flush interval. The fallback is tested too: with the up-front screening switched off, PostgreSQL's own refusal
isolates the record by halving the batch, and only that record is dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from devtools import pipeline
from devtools.broker import committed_offsets, create_topic, topic_from_start
from devtools.serving import serve_asgi
from services.archiver import sealing
from services.archiver.service import run_archiver
from services.archiver.settings import ArchiverSettings
from services.core.index import binary_key, binary_keys
from services.core.keywords import searchable_text
from services.core.settings import KafkaSettings
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from services.tools.replay import post_signed

pytestmark = pytest.mark.integration

SECRET = b"poison-it-secret"
FLUSH_AGE_S = 0.5  # pipeline.archiver_settings
# Flush interval, plus the halving of a small batch and the dead-letter round trip: well within a second here.
ARCHIVED_WITHIN_S = 10.0


def body(waba_id: str, phone_number_id: Any, message: dict[str, Any], wa_id: str) -> bytes:
    """A webhook as Meta sends it, written with the standard library so lone surrogates stay ``\\ud800`` escapes
    (valid JSON that Python decodes to an unpaired surrogate)."""
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": phone_number_id},
        "contacts": [{"profile": {"name": "Test Person"}, "wa_id": wa_id}],
        "messages": [message],
    }
    document = {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(document, ensure_ascii=True, separators=(",", ":")).encode()


def text(wamid: str, wa_id: str, **changes: Any) -> dict[str, Any]:
    message = {"from": wa_id, "id": wamid, "timestamp": str(int(time.time())), "type": "text", "text": {"body": "hi"}}
    message.update(changes)
    return message


def ordinary_message(person: pipeline.Person, wamid: str) -> bytes:
    return body(person.waba_id, person.phone_number_id, text(wamid, person.wa_id), person.wa_id)


@dataclass(frozen=True)
class Case:
    name: str
    waba_id: str
    phone_number_id: str
    message: dict[str, Any]
    outcome: str  # archived | dead-lettered: the reason starts with this


def cases(person: pipeline.Person) -> Iterator[Case]:
    waba, number, wa = person.waba_id, person.phone_number_id, person.wa_id
    yield Case("NUL in phone_number_id", waba, number + "\x00", text("wamid.p1", wa), "unstorable phone_number_id")
    yield Case("surrogate in phone_number_id", waba, number + "\ud800", text("wamid.p2", wa), "unstorable phone_numb")
    yield Case("over-long phone_number_id", waba, "9" * 5000, text("wamid.p3", wa), "unstorable phone_number_id")
    yield Case("NUL in the WABA id", "\x00" + waba, number, text("wamid.p4", wa), "unstorable waba_id")
    yield Case("NUL in the type", waba, number, text("wamid.p5", wa, type="te\x00xt"), "unstorable type")
    yield Case("surrogate in the type", waba, number, text("wamid.p6", wa, type="\udfff"), "unstorable type")
    yield Case("over-long type", waba, number, text("wamid.p7", wa, type="t" * 100_000), "unstorable type")
    # Not stored as text (pseudonymised, sealed or parsed): archived as they came.
    yield Case("NUL in the message id", waba, number, text("wamid.\x00p8", wa), "archived")
    yield Case("surrogate in the message id", waba, number, text("wamid.\ud800p9", wa), "archived")
    yield Case(
        "NUL and surrogate in the text", waba, number, text("wamid.p10", wa, text={"body": "\x00\ud800"}), "archived"
    )
    yield Case("timestamp beyond the calendar", waba, number, text("wamid.p11", wa, timestamp="9" * 19), "archived")
    yield Case("timestamp near its end", waba, number, text("wamid.p12", wa, timestamp="253402300000"), "archived")
    yield Case("over-long message id", waba, number, text("wamid." + "x" * 100_000, wa), "archived")


async def dead_letters(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, dict[str, bytes]]]:
    found: list[tuple[bytes, dict[str, bytes]]] = []
    async with topic_from_start(bootstrap, topic, 1) as consumer:
        for _ in range(100):
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.extend((r.value, dict(r.headers)) for r in records)
            if len(found) >= expected:
                break
    return found


async def indexed_since(pool: asyncpg.Pool, event_ids: list[str], timeout_s: float) -> set[str]:
    deadline = time.monotonic() + timeout_s
    found: set[str] = set()
    while time.monotonic() < deadline:
        rows = await pool.fetch(
            "SELECT encode(event_id, 'hex') AS event_id FROM archived_events WHERE event_id = ANY($1::bytea[])",
            binary_keys(event_ids),
        )
        found = {row["event_id"] for row in rows}
        if len(found) == len(event_ids):
            break
        await asyncio.sleep(0.1)
    return found


async def test_every_refused_value_is_archived_or_dead_lettered_and_nothing_behind_it_waits(
    kafka_bootstrap: str, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    topic = await create_topic(kafka_bootstrap, partitions=1, prefix="poison")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="poison-dlq")
    settings = pipeline.archiver_settings(demo_env, topic, dlq, f"test/{uuid.uuid4().hex[:8]}")
    ingest = IngestApp(
        IngestSettings(
            app_secrets=[SecretStr(SECRET.decode())],
            verify_token=SecretStr("v"),
            kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, events_topic=topic),
        )
    )
    person = pipeline.Person.fresh()
    all_cases = list(cases(person))
    registry = CollectorRegistry()
    async with serve_asgi(ingest) as url, httpx.AsyncClient(timeout=10) as client:
        await ingest.producer.wait_connected(20)

        async def send(webhook: bytes) -> None:
            assert await post_signed(client, f"{url}/webhooks/whatsapp", webhook, SECRET, attempts=1) == 200

        async with pipeline.running_archiver(settings, registry):
            for number, case in enumerate(all_cases):
                poison = body(case.waba_id, case.phone_number_id, case.message, person.wa_id)
                ordinary = ordinary_message(person, f"wamid.ok{number}")
                await send(poison)
                sent_at = time.monotonic()
                await send(ordinary)
                [poison_event], [ordinary_event] = pipeline.events_of([poison]), pipeline.events_of([ordinary])
                wanted = [ordinary_event.event_id] + ([poison_event.event_id] if case.outcome == "archived" else [])
                found = await indexed_since(pg_pool, wanted, ARCHIVED_WITHIN_S)
                assert found == set(wanted), f"{case.name}: {len(found)} of {len(wanted)} archived"
                assert time.monotonic() - sent_at < ARCHIVED_WITHIN_S
            expected_dead = [case for case in all_cases if case.outcome != "archived"]
            dead = await dead_letters(kafka_bootstrap, dlq, len(expected_dead))
            committed = await committed_offsets(kafka_bootstrap, settings.group_id, topic, 1)
    reasons = [headers["wa-dlq-reason"].decode() for _value, headers in dead]
    assert len(reasons) == len(expected_dead)
    for case, reason in zip(expected_dead, reasons, strict=True):
        assert reason.startswith(case.outcome), (case.name, reason)
        assert "\x00" not in reason, "the reason quotes no data"
    # Everything consumed was committed, dead letters included: nothing is consumed again after a restart.
    assert committed[0] == 2 * len(all_cases)
    assert 'wa_archiver_dead_letters_total{reason="unstorable type"} 3.0' in _metrics(registry)


async def test_a_refusal_the_screening_missed_dead_letters_that_record_alone(
    kafka_bootstrap: str, demo_env: dict[str, str], pg_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL itself refuses the NUL (CharacterNotInRepertoireError): the batch is halved until the record that
    # carries it is alone, and only that record leaves for the dead-letter topic.
    monkeypatch.setattr(sealing, "unstorable", lambda _event: None)
    topic = await create_topic(kafka_bootstrap, partitions=1, prefix="poison")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="poison-dlq")
    settings = pipeline.archiver_settings(demo_env, topic, dlq, f"test/{uuid.uuid4().hex[:8]}")
    person = pipeline.Person.fresh()
    bodies = [ordinary_message(person, f"wamid.b{n}") for n in range(9)]
    bodies.insert(
        5, body(person.waba_id, person.phone_number_id + "\x00", text("wamid.bad", person.wa_id), person.wa_id)
    )
    events = pipeline.events_of(bodies)
    bad = events[5]
    await pipeline.produce(kafka_bootstrap, topic, events)
    registry = CollectorRegistry()
    async with pipeline.running_archiver(settings, registry):
        good_ids = [e.event_id for e in events if e is not bad]
        assert await indexed_since(pg_pool, good_ids, 30) == set(good_ids)
        dead = await dead_letters(kafka_bootstrap, dlq, 1)
    assert [headers["wa-dlq-reason"] for _value, headers in dead] == [
        b"postgres refused: CharacterNotInRepertoireError"
    ]
    assert dead[0][0] == bad.to_json(), "the dead letter is the record exactly as consumed"
    assert (
        await pg_pool.fetchval("SELECT count(*) FROM archived_events WHERE event_id = $1", binary_key(bad.event_id))
        == 0
    )
    metrics = _metrics(registry)
    assert 'wa_archiver_dead_letters_total{reason="postgres refused"} 1.0' in metrics


async def test_one_refused_event_of_a_journaled_post_leaves_the_others_archived(
    kafka_bootstrap: str, demo_env: dict[str, str], pg_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One Kafka record, one POST of ten changes, one of them refused by PostgreSQL: the halving goes inside the
    record, the nine others are archived in objects of their own keys, and the dead letter is the refused
    event's envelope alone (not the POST, which holds the other people's messages)."""
    monkeypatch.setattr(sealing, "unstorable", lambda _event: None)
    topic = await create_topic(kafka_bootstrap, partitions=1, prefix="poison")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="poison-dlq")
    settings = pipeline.archiver_settings(demo_env, topic, dlq, f"test/{uuid.uuid4().hex[:8]}")
    person = pipeline.Person.fresh()
    bodies = [ordinary_message(person, f"wamid.j{n}") for n in range(9)]
    bodies.insert(
        5, body(person.waba_id, person.phone_number_id + "\x00", text("wamid.jbad", person.wa_id), person.wa_id)
    )
    changes = [json.loads(b)["entry"][0]["changes"][0] for b in bodies]
    post = json.dumps(
        {"object": "whatsapp_business_account", "entry": [{"id": person.waba_id, "changes": changes}]},
        ensure_ascii=True,
    ).encode()
    events = pipeline.events_of([post])
    assert len(events) == 10
    bad = events[5]
    await pipeline.produce_posts(kafka_bootstrap, topic, [post])
    registry = CollectorRegistry()
    async with pipeline.running_archiver(settings, registry):
        good_ids = [e.event_id for e in events if e is not bad]
        assert await indexed_since(pg_pool, good_ids, 30) == set(good_ids)
        dead = await dead_letters(kafka_bootstrap, dlq, 1)
        committed = await committed_offsets(kafka_bootstrap, settings.group_id, topic, 1)
    assert [headers["wa-dlq-reason"] for _value, headers in dead] == [
        b"postgres refused: CharacterNotInRepertoireError"
    ]
    assert dead[0][0] == bad.to_json()
    assert dead[0][1]["wa-format"] == b"event/1"
    rows = await pg_pool.fetch(
        "SELECT event_id, object_key FROM archived_events WHERE event_id = ANY($1::bytea[])", binary_keys(good_ids)
    )
    keys = {row["object_key"] for row in rows}
    assert len(keys) >= 2, "the halving split the record's events into several objects"
    assert any(key.endswith("-00006.waarc") for key in keys), "the object after the refused event has its own key"
    assert committed[0] == 1


def _metrics(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()


REAL_SEARCHABLE_TEXT = searchable_text


def failing_on(marker: str | None, calls: list[str]) -> Any:
    """A stand-in for sealing's keyword step that raises an exception nobody classified for texts holding ``marker``
    (every text when ``marker`` is ""; none when None): a bug that one value, or every value, trips."""
    real = REAL_SEARCHABLE_TEXT

    def failing(kind: str, payload: Any) -> list[str]:
        found = real(kind, payload)
        if marker is not None and any(marker in text for text in found):
            calls.append(marker)
            raise RuntimeError("a bug the archiver never saw")
        return found

    return failing


async def unexpected_pipeline(
    bootstrap: str, demo_env: dict[str, str], *, attempts: int
) -> tuple[str, str, ArchiverSettings]:
    """A topic, its dead-letter topic and an archiver's settings that try an unexpected failure ``attempts`` times."""
    topic = await create_topic(bootstrap, partitions=1, prefix="unexpected")
    dlq = await create_topic(bootstrap, partitions=1, prefix="unexpected-dlq")
    settings = pipeline.archiver_settings(demo_env, topic, dlq, f"test/{uuid.uuid4().hex[:8]}")
    return topic, dlq, settings.model_copy(update={"unexpected_attempts": attempts})


def text_message(person: pipeline.Person, wamid: str, words: str) -> bytes:
    return body(person.waba_id, person.phone_number_id, text(wamid, person.wa_id, text={"body": words}), person.wa_id)


async def test_an_unexpected_exception_in_one_record_dead_letters_it_alone_and_the_archiver_goes_on(
    kafka_bootstrap: str, demo_env: dict[str, str], pg_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(sealing, "searchable_text", failing_on("boom", calls))
    topic, dlq, settings = await unexpected_pipeline(kafka_bootstrap, demo_env, attempts=3)
    person = pipeline.Person.fresh()
    bodies = [text_message(person, f"wamid.u{n}", f"ordinary {n}") for n in range(20)]
    bodies.insert(13, text_message(person, "wamid.ubad", "boom"))
    events = pipeline.events_of(bodies)
    bad = events[13]
    await pipeline.produce(kafka_bootstrap, topic, events)
    registry = CollectorRegistry()
    stop = asyncio.Event()
    task = asyncio.create_task(run_archiver(settings, stop, registry=registry))
    try:
        good_ids = [e.event_id for e in events if e is not bad]
        assert await indexed_since(pg_pool, good_ids, 30) == set(good_ids)
        dead = await dead_letters(kafka_bootstrap, dlq, 1)
        for _ in range(100):
            committed = await committed_offsets(kafka_bootstrap, settings.group_id, topic, 1)
            if committed[0] == len(events):
                break
            await asyncio.sleep(0.1)
        assert not task.done(), "the archiver is still running"
        # Later records are archived too: the partition moved on.
        late = pipeline.events_of([text_message(person, "wamid.ulate", "after the bad one")])
        await pipeline.produce(kafka_bootstrap, topic, late)
        assert await indexed_since(pg_pool, [late[0].event_id], 30) == {late[0].event_id}
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    assert committed[0] == len(events)
    assert [(value, headers["wa-dlq-reason"]) for value, headers in dead] == [
        (bad.to_json(), b"unexpected failure: RuntimeError")
    ]
    assert len(calls) >= 3, "the record alone was tried unexpected_attempts times"
    assert 'wa_archiver_dead_letters_total{reason="unexpected failure"} 1.0' in _metrics(registry)


async def test_a_failure_of_every_record_is_not_dead_lettered_record_after_record(
    kafka_bootstrap: str, demo_env: dict[str, str], pg_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that every record trips (a bad release): at most one record is blamed, the rest wait, retried with
    backoff, and are all archived once the bug is gone — not emptied into the dead-letter topic."""
    calls: list[str] = []
    monkeypatch.setattr(sealing, "searchable_text", failing_on("", calls))
    topic, dlq, settings = await unexpected_pipeline(kafka_bootstrap, demo_env, attempts=2)
    person = pipeline.Person.fresh()
    events = pipeline.events_of([text_message(person, f"wamid.all{n}", f"ordinary {n}") for n in range(12)])
    await pipeline.produce(kafka_bootstrap, topic, events)
    stop = asyncio.Event()
    task = asyncio.create_task(run_archiver(settings, stop, registry=CollectorRegistry()))
    try:
        for _ in range(300):
            if len(calls) >= 40:
                break
            await asyncio.sleep(0.1)
        assert len(calls) >= 40, "the records are being retried"
        assert not task.done()
        blamed = await dead_letters(kafka_bootstrap, dlq, 2)
        assert len(blamed) <= 1, "one record blamed at most while nothing else is archived"
        monkeypatch.setattr(sealing, "searchable_text", failing_on(None, calls))  # the fix is deployed
        blamed_ids = {json.loads(value)["event_id"] for value, _headers in blamed}
        rest = [e.event_id for e in events if e.event_id not in blamed_ids]
        assert await indexed_since(pg_pool, rest, 30) == set(rest)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
