"""Media files of a retrieved conversation (the CLI's ``messages --include-media``, the console's ``/media``):
each file is audited as its own view, with the reason, before it is decrypted; a file is served only to a view
of its own person. Against the real Kafka, archiver, S3 and PostgreSQL, with the Graph API stand-in."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from devtools import pipeline
from devtools.broker import create_topic
from devtools.graph_api import FakeGraphApi
from devtools.pipeline import Person
from services.actions.access import open_access
from services.actions.layer import Actions, NotFound, Operator
from services.core.index import binary_keys
from services.core.refusals import ReasonRequired
from services.governance.metrics import RetentionMetrics

pytestmark = pytest.mark.integration

PHOTO = b"\x89PNG\r\n\x1a\n" + b"media view test image " * 40
GRAPH_TOKEN = "graph-token-for-media-view-tests"


async def archive_photo(demo_env: dict[str, str], pool: asyncpg.Pool, prefix: str, person: Person) -> None:
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="mediaview")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    t = int(time.time()) - 600
    async with FakeGraphApi(token=GRAPH_TOKEN) as graph:
        digest = graph.add_media("view-photo", PHOTO)
        bodies = [
            pipeline.text_message(person, "wamid.V1", "voici la photo", t),
            pipeline.image(person, "wamid.V2", t + 5, id="view-photo", mime_type="image/png", sha256=digest),
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
                    return
                await asyncio.sleep(0.1)
    raise AssertionError("the image was not archived")


async def test_each_media_file_of_a_conversation_is_audited_before_it_is_decrypted(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    person = Person.fresh()
    await archive_photo(demo_env, pg_pool, prefix, person)
    access = await open_access(pipeline.retention_settings(demo_env, prefix))
    try:
        actions = Actions(access, RetentionMetrics(CollectorRegistry()))
        operator = Operator(f"media-view-{uuid.uuid4().hex[:6]}", "dpo")
        conversation = await actions.messages(operator, contact=person.wa_id, reason="ticket 12")
        with pytest.raises(ReasonRequired):
            [m async for m in actions.media(operator, conversation, reason=" ")]
        files = [b"".join([c async for c in m.chunks]) async for m in
                 actions.media(operator, conversation, reason="ticket 12")]  # fmt: skip
        assert files == [PHOTO]
        image = next(m for m in conversation.messages if m.type == "image")
        with pytest.raises(NotFound):  # not a file of the person named (another pseudonym)
            await actions.media_file(operator, event_id=image.event_id, subject_refs=["f" * 64], reason="ticket 12")
    finally:
        await access.close()
    rows = await pg_pool.fetch(
        "SELECT action, reason, record_count, details->>'event_id' AS event_id FROM audit_log WHERE actor = $1"
        " ORDER BY audit_id",
        operator.name,
    )
    assert [(r["action"], r["reason"], r["record_count"], r["event_id"]) for r in rows] == [
        ("retrieval", "ticket 12", 2, None),
        ("media", "ticket 12", 1, image.event_id),
    ]
