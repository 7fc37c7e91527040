"""Media downloads through the (fake) Graph API: verified, retried, archived encrypted, or marked missing."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import asyncpg
import pytest

from services.archiver.media import MediaFetcher, MediaRef, media_ref, sha256_matches
from services.core.container import media_record_id
from services.core.index import binary_keys
from services.core.reader import RecordLocation
from services.retention.access import open_access
from services.retention.conversation import load_conversation
from tests import pipeline
from tests.fakes.graph_api import FakeGraphApi
from tests.support import create_topic, payloads_dir

pytestmark = pytest.mark.integration

TOKEN = "graph-token-for-tests"


def sample(name: str) -> Any:
    return json.loads((payloads_dir() / name).read_bytes())["entry"][0]["changes"][0]["value"]["messages"][0]


@pytest.mark.parametrize(
    ("message_type", "payload", "expected_id"),
    [
        *(
            pytest.param(kind, sample(f"inbound_{kind}.json"), sample(f"inbound_{kind}.json")[kind]["id"], id=kind)
            for kind in ("image", "audio", "video", "document", "sticker")
        ),
        pytest.param("text", sample("inbound_text.json"), None, id="text has no media"),
        pytest.param("image", {"image": {"caption": "no id"}}, None, id="media without id"),
        pytest.param("image", {"image": "not an object"}, None, id="odd payload"),
        pytest.param("image", None, None, id="no payload"),
        pytest.param(None, {"image": {"id": "1"}}, None, id="no type"),
    ],
)
def test_media_ref(message_type: str | None, payload: Any, expected_id: str | None) -> None:
    found = media_ref(message_type, payload)
    assert (found.media_id if found else None) == expected_id


def test_sha256_forms() -> None:
    data = b"bytes"
    assert sha256_matches(data, hashlib.sha256(data).hexdigest())
    assert sha256_matches(data, __import__("base64").b64encode(hashlib.sha256(data).digest()).decode())
    assert sha256_matches(data, None)
    assert not sha256_matches(data, "AAAA")


async def test_fetch_ok_retry_final_and_mismatch() -> None:
    async with FakeGraphApi(token=TOKEN) as api:
        digest = api.add_media("m1", b"jpeg bytes" * 100)
        fetcher = MediaFetcher(api.base_url, TOKEN, attempts=3, backoff_s=0.01, max_bytes=5000, egress=api.egress)
        try:
            ok = await fetcher.fetch(MediaRef("m1", "image/jpeg", digest))
            assert (ok.ok, ok.data, ok.attempts) == (True, b"jpeg bytes" * 100, 1)

            api.fail_next(2, 500)
            retried = await fetcher.fetch(MediaRef("m1", None, digest))
            assert (retried.ok, retried.attempts) == (True, 3)

            expired = await fetcher.fetch(MediaRef("gone", None, None))
            assert (expired.ok, expired.failure, expired.attempts) == (False, "http 404", 1)

            api.corrupt("m1")
            mismatch = await fetcher.fetch(MediaRef("m1", None, digest))
            assert (mismatch.failure, mismatch.attempts) == ("sha256 mismatch", 3)

            api.add_media("big", b"x" * 6000)
            assert (await fetcher.fetch(MediaRef("big", None, None))).failure == "too large"
        finally:
            await fetcher.aclose()
        wrong = MediaFetcher(api.base_url, "wrong-token", attempts=2, backoff_s=0.01, egress=api.egress)
        try:
            assert (await wrong.fetch(MediaRef("m1", None, None))).failure == "http 401"
        finally:
            await wrong.aclose()
        base_url, egress = api.base_url, api.egress
    unreachable = MediaFetcher(base_url, TOKEN, attempts=2, backoff_s=0.01, timeout_s=2, egress=egress)
    try:
        assert (await unreachable.fetch(MediaRef("m1", None, None))).failure == "connection error"
    finally:
        await unreachable.aclose()


async def test_egress_refusals_keep_the_token_home() -> None:
    """A download URL off the allow-list, or http, is refused before any request (the spy sees nothing, so the
    token never reaches it); a redirect is not followed; a media id that cannot go into a URL path is refused
    before the Graph API is asked; and whatever comes back, fetch answers with a reason instead of raising."""
    async with FakeGraphApi(token=TOKEN) as api, FakeGraphApi(token="spy") as spy:
        digest = api.add_media("m1", b"bytes")
        spy_url = spy.base_url.replace("127.0.0.1", "localhost")  # loopback, but not on the allow-list
        api.add_media("off-list", b"bytes")
        api.point_elsewhere("off-list", f"{spy_url}/download/x")
        api.add_media("plain-http", b"bytes")
        api.point_elsewhere("plain-http", "http://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1")
        api.add_media("odd-url", b"bytes")
        api.point_elsewhere("odd-url", "https://lookaside.fbsbx.com:port/x")
        api.add_media("redirected", b"bytes")
        api.redirect("redirected", f"{spy_url}/download/x")
        fetcher = MediaFetcher(api.base_url, TOKEN, attempts=2, backoff_s=0.01, egress=api.egress)
        try:
            outcomes = {
                media_id: (await fetcher.fetch(MediaRef(media_id, None, digest))).failure
                for media_id in ("off-list", "plain-http", "odd-url", "redirected", "m1")
            }
            asked = len(api.requests)
            bad_ids = ["1 2", "../me", "1?fields=x", "1/2", "1%2F2", "é", "x\x00", "", "1" * 200]
            refused = [(await fetcher.fetch(MediaRef(media_id, None, None))).failure for media_id in bad_ids]
        finally:
            await fetcher.aclose()
        assert outcomes == {
            "off-list": "url host not allowed",
            "plain-http": "url not https",
            "odd-url": "bad url",
            "redirected": "http 302",
            "m1": None,
        }
        assert spy.requests == []  # neither the refused URL nor the redirect's target was ever requested
        assert refused == ["bad media id"] * len(bad_ids)
        assert len(api.requests) == asked  # a bad id never reaches the Graph API either


async def test_media_is_archived_encrypted_or_marked_missing(demo_env: dict[str, str], pg_pool: asyncpg.Pool) -> None:
    person = pipeline.Person.fresh()
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="media")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    photo = b"\xff\xd8\xff a real jpeg, honestly" * 50

    def image(wamid: str, media_id: str, digest: str) -> bytes:
        return pipeline.envelope(
            person,
            "messages",
            {
                "messages": [
                    {
                        "from": person.wa_id,
                        "id": wamid,
                        "timestamp": "1760000000",
                        "type": "image",
                        "image": {"mime_type": "image/jpeg", "sha256": digest, "id": media_id, "caption": "receipt"},
                    }
                ]
            },
        )

    async with FakeGraphApi(token=TOKEN) as api:
        digest = api.add_media("photo-1", photo)
        bodies = [
            image("wamid.IMG1", "photo-1", digest),
            image("wamid.IMG2", "expired-id", digest),
            image("wamid.IMG3", "no url can carry this: \x01 é /../", digest),
        ]
        events = pipeline.events_of(bodies)
        await pipeline.produce(bootstrap, topic, events)
        settings = pipeline.archiver_settings(
            demo_env,
            topic,
            dlq,
            prefix,
            graph=api.graph_settings(attempts=2, backoff_s=0.01),
        )
        async with pipeline.running_archiver(settings):
            await pipeline.wait_indexed(pg_pool, {e.event_id for e in events})
    rows = {
        r["event_id"]: r
        for r in await pg_pool.fetch(
            "SELECT encode(event_id, 'hex') AS event_id, status, object_key, failure, size_bytes FROM archived_media"
            " WHERE event_id = ANY($1::bytea[])",
            binary_keys(e.event_id for e in events),
        )
    }
    archived, missing, bad_id = (rows[e.event_id] for e in events)
    assert (archived["status"], archived["size_bytes"]) == ("archived", len(photo))
    assert (missing["status"], missing["failure"]) == ("missing", "http 404")
    assert (bad_id["status"], bad_id["failure"]) == ("missing", "bad media id")  # its message is archived

    access = await open_access(pipeline.retention_settings(demo_env, prefix))
    try:
        blob = await access.bucket.get(archived["object_key"])
        assert photo not in blob  # encrypted at rest
        location = RecordLocation(media_record_id(events[0].event_id), archived["object_key"], 0)
        assert (await access.reader.open([location]))[location.event_id] == photo
        conversation = await load_conversation(
            access.pool,
            access.reader,
            access.pepper,
            contact=person.wa_id,
            phone_number_id=None,
            actor="t",
            reason="media check",
        )
    finally:
        await access.close()
    assert {m.media["status"] for m in conversation.messages if m.media} == {"archived", "missing"}
