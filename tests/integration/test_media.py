"""Media downloads through the (fake) Graph API: verified, retried, archived encrypted, or marked missing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from mypy_boto3_s3 import S3Client
from prometheus_client import CollectorRegistry

from devtools import pipeline
from devtools.broker import create_topic
from devtools.graph_api import FakeGraphApi, generated_bytes
from devtools.samples import payloads_dir
from services.actions.access import ArchiveAccess, open_access
from services.archiver.media import MediaFetcher, MediaRef, MediaSink, media_ref, sha256_matches
from services.archiver.media_store import MediaTarget, SealedMediaUpload
from services.archiver.metrics import ArchiverMetrics
from services.archiver.rebuild import rebuild_index
from services.archiver.settings import MediaSettings
from services.archiver.sweep import MediaSweep, SweepReport
from services.core.bucket import ArchiveBucket
from services.core.container import (
    STREAM_VERSION,
    ContainerError,
    ContainerRecord,
    RecordMeta,
    SourceRange,
    encode_container,
    media_object_key,
    media_record_id,
    read_header,
)
from services.core.crypto import CachedDek, DekCache, LocalKek, seal_record
from services.core.events import Event
from services.core.index import binary_keys
from services.core.keyring import Keyring
from services.core.policy import DEFAULT_POLICY
from services.core.vocabulary import rfc3339_millis
from services.gateway.records import SendContext, outcome_event
from services.review.conversation import load_conversation

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


class Collected(MediaSink):
    """A sink that keeps what it is given (for the fetcher's own tests; the archiver's sink is tested on S3)."""

    def __init__(self, mime_type: str | None) -> None:
        self.mime_type = mime_type
        self.pieces: list[bytes] = []
        self.state = "open"

    async def write(self, data: bytes) -> None:
        self.pieces.append(data)

    async def finish(self) -> None:
        self.state = "finished"

    async def abort(self) -> None:
        self.state = "aborted"


class Collecting:
    """The store of :class:`Collected` sinks: every attempt's sink, in order."""

    def __init__(self) -> None:
        self.sinks: list[Collected] = []

    def memory(self, declared_size: int | None) -> int:
        return 1024

    def open(self, mime_type: str | None) -> Collected:
        self.sinks.append(Collected(mime_type))
        return self.sinks[-1]

    @property
    def finished(self) -> bytes:
        (done,) = [sink for sink in self.sinks if sink.state == "finished"]
        return b"".join(done.pieces)


async def test_fetch_ok_retry_final_and_mismatch() -> None:
    async with FakeGraphApi(token=TOKEN) as api:
        digest = api.add_media("m1", b"jpeg bytes" * 100)
        fetcher = MediaFetcher(api.base_url, TOKEN, attempts=3, backoff_s=0.01, max_bytes=5000, egress=api.egress)
        try:
            store = Collecting()
            ok = await fetcher.fetch(MediaRef("m1", "image/jpeg", digest), store)
            assert (ok.ok, ok.size_bytes, ok.attempts, store.finished) == (True, 1000, 1, b"jpeg bytes" * 100)

            api.fail_next(2, 500)
            store = Collecting()
            retried = await fetcher.fetch(MediaRef("m1", None, digest), store)
            assert (retried.ok, retried.attempts, store.finished) == (True, 3, b"jpeg bytes" * 100)

            expired = await fetcher.fetch(MediaRef("gone", None, None), Collecting())
            assert (expired.ok, expired.failure, expired.attempts) == (False, "http 404", 1)

            api.corrupt("m1")
            store = Collecting()
            mismatch = await fetcher.fetch(MediaRef("m1", None, digest), store)
            assert (mismatch.failure, mismatch.attempts) == ("sha256 mismatch", 3)
            assert [sink.state for sink in store.sinks] == ["aborted"] * 3  # never finished: nothing kept

            api.add_media("big", b"x" * 6000)
            assert (await fetcher.fetch(MediaRef("big", None, None), Collecting())).failure == "too large"
        finally:
            await fetcher.aclose()
        wrong = MediaFetcher(api.base_url, "wrong-token", attempts=2, backoff_s=0.01, egress=api.egress)
        try:
            assert (await wrong.fetch(MediaRef("m1", None, None), Collecting())).failure == "http 401"
        finally:
            await wrong.aclose()
        base_url, egress = api.base_url, api.egress
    unreachable = MediaFetcher(base_url, TOKEN, attempts=2, backoff_s=0.01, timeout_s=2, egress=egress)
    try:
        assert (await unreachable.fetch(MediaRef("m1", None, None), Collecting())).failure == "connection error"
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
                media_id: (await fetcher.fetch(MediaRef(media_id, None, digest), Collecting())).failure
                for media_id in ("off-list", "plain-http", "odd-url", "redirected", "m1")
            }
            asked = len(api.requests)
            bad_ids = ["1 2", "../me", "1?fields=x", "1/2", "1%2F2", "é", "x\x00", "", "1" * 200]
            refused = [(await fetcher.fetch(MediaRef(m, None, None), Collecting())).failure for m in bad_ids]
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

    async with FakeGraphApi(token=TOKEN) as api, FakeGraphApi(token="spy") as spy:
        digest = api.add_media("photo-1", photo)
        api.add_media("off-list", photo)
        api.point_elsewhere("off-list", spy.base_url.replace("127.0.0.1", "localhost") + "/download/x")
        bodies = [
            image("wamid.IMG1", "photo-1", digest),
            image("wamid.IMG2", "expired-id", digest),
            image("wamid.IMG3", "no url can carry this: \x01 é /../", digest),
            image("wamid.IMG4", "off-list", digest),
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
        registry = CollectorRegistry()
        async with pipeline.running_archiver(settings, registry):
            await pipeline.wait_indexed(pg_pool, {e.event_id for e in events})
            await wait_media(pg_pool, [e.event_id for e in events])
        assert spy.requests == []  # the URL off the allow-list was refused: the token never went there
    refused = {"reason": "url host not allowed"}
    assert registry.get_sample_value("wa_archiver_media_failures_total", refused) == 1  # and counted
    rows = {
        r["event_id"]: r
        for r in await pg_pool.fetch(
            "SELECT encode(event_id, 'hex') AS event_id, status, object_key, failure, size_bytes FROM archived_media"
            " WHERE event_id = ANY($1::bytea[])",
            binary_keys(e.event_id for e in events),
        )
    }
    archived, missing, bad_id, off_list = (rows[e.event_id] for e in events)
    assert (archived["status"], archived["size_bytes"]) == ("archived", len(photo))
    assert (missing["status"], missing["failure"]) == ("missing", "http 404")
    assert (bad_id["status"], bad_id["failure"]) == ("missing", "bad media id")  # its message is archived
    assert (off_list["status"], off_list["failure"]) == ("missing", "url host not allowed")

    access = await open_access(pipeline.retention_settings(demo_env, prefix))
    try:
        blob = await access.bucket.get(archived["object_key"])
        assert photo not in blob  # encrypted at rest
        assert blob[6] == STREAM_VERSION  # a streamed object (format version 3)
        opened = await access.reader.open_media(media_record_id(events[0].event_id), archived["object_key"])
        assert opened is not None
        assert opened.size == len(photo)
        assert b"".join([chunk async for chunk in opened.chunks]) == photo
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


def document(person: pipeline.Person, wamid: str, media_id: str, digest: str, mime_type: str) -> bytes:
    return pipeline.envelope(
        person,
        "messages",
        {
            "messages": [
                {
                    "from": person.wa_id,
                    "id": wamid,
                    "timestamp": "1760000000",
                    "type": "document",
                    "document": {"mime_type": mime_type, "sha256": digest, "id": media_id, "filename": "f.pdf"},
                }
            ]
        },
    )


async def read_back(access: ArchiveAccess, event_id: str, object_key: str) -> tuple[int, str, int]:
    """(announced size, sha256 hex, bytes read) of an archived medium, read as a stream."""
    opened = await access.reader.open_media(media_record_id(event_id), object_key)
    assert opened is not None
    digest, read = hashlib.sha256(), 0
    async for chunk in opened.chunks:
        digest.update(chunk)
        read += len(chunk)
    return opened.size, digest.hexdigest(), read


def generated_sha256(media_id: str, size: int) -> str:
    digest = hashlib.sha256()
    for block in generated_bytes(media_id, size):
        digest.update(block)
    return digest.hexdigest()


async def test_media_stream_through_multipart_and_read_back_byte_exact(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    """Media of 0 bytes, exactly two chunks, and 21 MiB + 1 (five parts of S3 multipart with 5 MiB parts) are
    streamed by the stand-in, sealed in 64 KiB chunks and uploaded part by part; each reads back byte for byte."""
    person = pipeline.Person.fresh()
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="media")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    sizes = {"empty-doc": 0, "two-chunks": 2 * 64 * 1024, "large-doc": 21 * 1024 * 1024 + 1}
    async with FakeGraphApi(token=TOKEN) as api:
        bodies = [
            document(person, f"wamid.DOC{i}", media_id, api.add_generated_media(media_id, size), "application/pdf")
            for i, (media_id, size) in enumerate(sizes.items())
        ]
        events = pipeline.events_of(bodies)
        await pipeline.produce(bootstrap, topic, events)
        settings = pipeline.archiver_settings(
            demo_env,
            topic,
            dlq,
            prefix,
            graph=api.graph_settings(attempts=2, backoff_s=0.01),
            media=MediaSettings(chunk_bytes=64 * 1024, part_bytes=5 * 1024 * 1024, budget_bytes=32 * 1024 * 1024),
        )
        registry = CollectorRegistry()
        async with pipeline.running_archiver(settings, registry):
            await pipeline.wait_indexed(pg_pool, {e.event_id for e in events})
            rows = await wait_media(pg_pool, [e.event_id for e in events])
            # Every download gave its bytes back to the budget; all three counted archived.
            assert registry.get_sample_value("wa_archiver_media_budget_bytes_in_use") == 0
            assert registry.get_sample_value("wa_archiver_media_total", {"outcome": "archived"}) == 3
    access = await open_access(pipeline.retention_settings(demo_env, prefix))
    try:
        for event, (media_id, size) in zip(events, sizes.items(), strict=True):
            row = rows[event.event_id]
            assert (row["status"], row["size_bytes"], row["mime_type"]) == ("archived", size, "application/pdf")
            assert await read_back(access, event.event_id, row["object_key"]) == (
                size,
                generated_sha256(media_id, size),
                size,
            )
        # rebuild-index reads streamed objects through (verified whole, never held) and finds the media again; a
        # copy with one byte changed in the middle of its stream is refused as unreadable.
        large = rows[events[-1].event_id]["object_key"]
        blob = bytearray(await access.bucket.get(large))
        blob[len(blob) // 2] ^= 1
        await access.bucket.put(f"{prefix}/media/corrupt.waarc", bytes(blob))
        await pg_pool.execute(
            "DELETE FROM archived_media WHERE event_id = ANY($1::bytea[])", binary_keys(e.event_id for e in events)
        )
        report = await rebuild_index(access.pool, access.bucket, DEFAULT_POLICY, prefix=prefix)
        assert (report.media, report.unreadable_objects) == (3, 1)
        rebuilt = await wait_media(pg_pool, [e.event_id for e in events])
        assert {e.event_id: rebuilt[e.event_id]["object_key"] for e in events} == {
            e.event_id: rows[e.event_id]["object_key"] for e in events
        }
        assert {r["status"] for r in rebuilt.values()} == {"archived"}
    finally:
        await access.close()


async def wait_media(pool: asyncpg.Pool, event_ids: list[str], timeout_s: float = 120) -> dict[str, Any]:
    """The archived_media rows of ``event_ids`` once every one has one."""
    rows: dict[str, Any] = {}
    for _ in range(int(timeout_s * 5)):
        rows = {
            r["event_id"]: r
            for r in await pool.fetch(
                "SELECT encode(event_id, 'hex') AS event_id, status, object_key, mime_type, size_bytes, failure,"
                " attempts FROM archived_media WHERE event_id = ANY($1::bytea[])",
                binary_keys(event_ids),
            )
        }
        if len(rows) == len(event_ids):
            return rows
        await asyncio.sleep(0.2)
    raise AssertionError(f"{len(rows)} of {len(event_ids)} media rows after {timeout_s}s")


async def test_a_media_object_of_format_version_2_stays_readable(demo_env: dict[str, str]) -> None:
    """Media archived before streaming (one sealed record in a version 2 object) are read as before."""
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    access = await open_access(pipeline.retention_settings(demo_env, prefix))
    # Written as the archiver wrote it then (its role makes keys, its S3 identity writes); read as retention reads.
    archiver_pool = await asyncpg.create_pool(demo_env["WA_ARCHIVER_PG__DSN"], min_size=1, max_size=2)
    keys = pipeline.key_settings(demo_env)
    writer_keys = Keyring(archiver_pool, LocalKek(keys.kek_bytes(), keys.current_kek_id), DekCache(10))
    try:
        event_id, subject = uuid.uuid4().hex, hashlib.sha256(uuid.uuid4().bytes).hexdigest()
        dek = (await writer_keys.keys_for_writing({subject}))[subject]
        record_id = media_record_id(event_id)
        photo = b"\xff\xd8 an old photo" * 1000
        meta = RecordMeta(
            event_id=record_id,
            subject_ref=subject,
            alias_refs=(),
            dek_id=dek.dek_id,
            kind="media",
            type="image/jpeg",
            timestamp=1760000000,
            received_at=None,
            waba_id=None,
            phone_number_id=None,
            message_ref=None,
            original_message_ref=None,
            offset=5,
        )
        sealed = seal_record(photo, dek.aead(), event_id=record_id, subject_ref=subject)
        blob = encode_container(
            [ContainerRecord(meta, sealed)], source=SourceRange("t", 0, 5, 5), created_at="2026-11-25T10:00:00Z"
        )
        key = media_object_key(prefix, event_id)
        await ArchiveBucket(pipeline.s3_settings(demo_env, prefix)).put(key, blob)
        opened = await access.reader.open_media(record_id, key)
        assert opened is not None
        assert opened.size == len(photo)
        assert b"".join([chunk async for chunk in opened.chunks]) == photo
        with pytest.raises(ContainerError, match="another record"):
            await access.reader.open_media(media_record_id(uuid.uuid4().hex), key)
    finally:
        await archiver_pool.close()
        await access.close()


async def test_the_sweep_archives_a_medium_whose_download_failed_twice_and_gives_up_after_30_days(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    """The first download (with its message) fails and the first sweep fails: the third try, a later sweep, archives
    it byte for byte — a medium by id, and one the business sent by ``link`` through the gateway alike. A medium
    that stays unavailable is given up once Meta no longer holds it (30 days), counted; one whose id no URL can
    carry is never queued. Their messages are archived from the start."""
    person = pipeline.Person.fresh()
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="media")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    photo = b"\xff\xd8\xff a flaky photo" * 3000
    async with FakeGraphApi(token=TOKEN) as api:
        digest = api.add_media("flaky", photo)
        bodies = [
            document(person, "wamid.FLAKY", "flaky", digest, "image/jpeg"),
            document(person, "wamid.GONE", "gone-for-good", digest, "image/jpeg"),
            document(person, "wamid.BAD", "no/such id", digest, "image/jpeg"),
        ]
        flaky, gone, bad = events = pipeline.events_of(bodies)
        invoice = b"%PDF-1.4 a flaky linked invoice" * 500
        linked = sent_by_link(person, api.add_file("/files/flaky-invoice.pdf", invoice, "application/pdf"))
        events.append(linked)
        api.fail_file("/files/flaky-invoice.pdf", 1)  # the fetch with its message fails
        await pipeline.produce(bootstrap, topic, events)
        graph = api.graph_settings(attempts=1, backoff_s=0.01)
        settings = pipeline.archiver_settings(
            demo_env, topic, dlq, prefix, graph=graph, media=MediaSettings(sweep_interval_s=0)
        )
        api.fail_next(1, 500)  # the download with its message fails
        async with pipeline.running_archiver(settings):
            await pipeline.wait_indexed(pg_pool, {e.event_id for e in events})
            rows = await wait_media(pg_pool, [e.event_id for e in events])
        assert [rows[e.event_id]["status"] for e in events] == ["missing"] * 4
        # a bad id is never retried
        assert await queued(pg_pool, events) == {flaky.event_id: 0, gone.event_id: 0, linked.event_id: 0}

        # The sweep runs as the archiver runs it: its database role and S3 identity, which cannot read the archive.
        access = await open_access(pipeline.retention_settings(demo_env, prefix))
        archiver_pool = await asyncpg.create_pool(settings.pg.dsn.get_secret_value(), min_size=1, max_size=2)
        keys = settings.keys
        registry = CollectorRegistry()
        fetcher = MediaFetcher(api.base_url, TOKEN, attempts=1, backoff_s=0.01, egress=api.egress)
        sweep = MediaSweep(
            pool=archiver_pool,
            bucket=ArchiveBucket(settings.s3),
            keyring=Keyring(archiver_pool, LocalKek(keys.kek_bytes(), keys.current_kek_id), DekCache(100)),
            fetcher=fetcher,
            metrics=ArchiverMetrics(registry),
            chunk_bytes=64 * 1024,
            part_bytes=5 * 1024 * 1024,
        )
        now = datetime.now(UTC)
        try:
            assert await sweep.sweep(now) == SweepReport()  # nothing due before its first retry (5 minutes)
            api.fail_next(2, 503)  # the first sweep fails too (for both media, whichever goes first)
            api.fail_file("/files/flaky-invoice.pdf", 1)
            assert await sweep.sweep(now + timedelta(minutes=6)) == SweepReport(failed=3)
            assert await queued(pg_pool, events) == {flaky.event_id: 1, gone.event_id: 1, linked.event_id: 1}
            assert await sweep.sweep(now + timedelta(minutes=7)) == SweepReport()  # leased, then backed off
            assert await sweep.sweep(now + timedelta(hours=1)) == SweepReport(archived=2, failed=1)
            assert await queued(pg_pool, events) == {gone.event_id: 2}
            row = (await wait_media(pg_pool, [flaky.event_id]))[flaky.event_id]
            assert (row["status"], row["size_bytes"], row["mime_type"]) == ("archived", len(photo), "image/jpeg")
            assert await read_back(access, flaky.event_id, row["object_key"]) == (
                len(photo),
                hashlib.sha256(photo).hexdigest(),
                len(photo),
            )
            row = (await wait_media(pg_pool, [linked.event_id]))[linked.event_id]
            assert (row["status"], row["size_bytes"]) == ("archived", len(invoice))
            assert await read_back(access, linked.event_id, row["object_key"]) == (
                len(invoice),
                hashlib.sha256(invoice).hexdigest(),
                len(invoice),
            )
            assert await sweep.sweep(now + timedelta(days=31)) == SweepReport(given_up=1)
            assert await queued(pg_pool, events) == {}
            given_up = (await wait_media(pg_pool, [gone.event_id]))[gone.event_id]
            assert (given_up["status"], given_up["failure"]) == ("missing", "given up: http 404")
            assert registry.get_sample_value("wa_archiver_media_given_up_total") == 1
            assert registry.get_sample_value("wa_archiver_media_retries_total", {"outcome": "archived"}) == 2
        finally:
            await fetcher.aclose()
            await archiver_pool.close()
            await access.close()
    assert rows[bad.event_id]["failure"] == "bad media id"


def sent_by_link(person: pipeline.Person, link: str) -> Event:
    """The outcome of a document the business sent by ``link`` through the gateway (services/gateway/records.py)."""
    request = {"messaging_product": "whatsapp", "to": person.wa_id, "type": "document", "document": {"link": link}}
    context = SendContext(
        send_id=uuid.uuid4().hex,
        waba_id=person.waba_id,
        phone_number_id=person.phone_number_id,
        raw=json.dumps(request).encode(),
        request=request,
        received_at=rfc3339_millis(datetime.now(UTC)),
    )
    answer = {"messages": [{"id": f"wamid.LINKED.{uuid.uuid4().hex}"}], "contacts": [{"wa_id": person.wa_id}]}
    return outcome_event(context, outcome="sent", status=200, response=answer)


async def queued(pool: asyncpg.Pool, events: list[Any]) -> dict[str, int]:
    """{event id: sweeps so far} of the events queued for the media sweep."""
    rows = await pool.fetch(
        "SELECT encode(event_id, 'hex') AS event_id, sweeps FROM media_retry WHERE event_id = ANY($1::bytea[])",
        binary_keys(e.event_id for e in events),
    )
    return {row["event_id"]: row["sweeps"] for row in rows}


async def test_an_aborted_upload_leaves_nothing_readable(demo_env: dict[str, str], s3_client: S3Client) -> None:
    """A download that fails after parts were uploaded (say, its checksum) is aborted: no object under its key and
    no unfinished upload left; one that finishes is a verified version 3 object."""
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    bucket = ArchiveBucket(pipeline.s3_settings(demo_env, prefix))
    target = MediaTarget(
        event_id=uuid.uuid4().hex,
        record_id=media_record_id(uuid.uuid4().hex),
        object_key=f"{prefix}/media/aborted.waarc",
        sealing=hashlib.sha256(b"someone").hexdigest(),
        dek=CachedDek("dek-test", bytes(32)),
        source=SourceRange("t", 0, 1, 1),
        created_at="2026-12-06T12:00:00.000Z",
        timestamp=None,
        received_at=None,
        waba_id=None,
        phone_number_id=None,
    )
    upload = SealedMediaUpload(
        bucket, target, "application/pdf", chunk_bytes=64 * 1024, part_bytes=5 * 1024 * 1024, now=datetime.now(UTC)
    )
    for _ in range(7):
        await upload.write(b"x" * 1024 * 1024)  # 7 MiB: one part sent
    await upload.abort()
    name = demo_env["WA_ARCHIVER_S3__BUCKET"]
    assert "Contents" not in s3_client.list_objects_v2(Bucket=name, Prefix=prefix)
    pending = s3_client.list_multipart_uploads(Bucket=name, Prefix=prefix).get("Uploads", [])
    assert pending == []

    finished = SealedMediaUpload(
        bucket, target, "application/pdf", chunk_bytes=64 * 1024, part_bytes=5 * 1024 * 1024, now=datetime.now(UTC)
    )
    for _ in range(7):
        await finished.write(b"y" * 1024 * 1024)
    await finished.finish()
    blob = s3_client.get_object(Bucket=name, Key=target.object_key)["Body"].read()
    assert len(blob) == finished.object_bytes
    (meta,) = read_header(blob)[2]  # the whole object verifies: header digest, header rules, trailer
    assert (meta.event_id, meta.type, meta.kind) == (target.record_id, "application/pdf", "media")


async def test_a_multipart_media_object_is_written_under_object_lock(
    demo_env: dict[str, str], s3_client: S3Client
) -> None:
    """With Object Lock configured, a medium uploaded in parts carries the same retention as any object (GOVERNANCE,
    one day here: the local bucket is versioned with Object Lock, as production is)."""
    prefix = f"test/lock-{uuid.uuid4().hex[:8]}"
    settings = pipeline.s3_settings(demo_env, prefix)
    settings.object_lock_mode = "GOVERNANCE"
    settings.object_lock_days = 1
    bucket = ArchiveBucket(settings)
    key = f"{prefix}/media/locked.waarc"
    target = MediaTarget(
        event_id=uuid.uuid4().hex,
        record_id=media_record_id(uuid.uuid4().hex),
        object_key=key,
        sealing=hashlib.sha256(b"someone").hexdigest(),
        dek=CachedDek("dek-test", bytes(32)),
        source=SourceRange("t", 0, 1, 1),
        created_at="2026-12-06T12:00:00.000Z",
        timestamp=None,
        received_at=None,
        waba_id=None,
        phone_number_id=None,
    )
    now = datetime.now(UTC)
    upload = SealedMediaUpload(bucket, target, None, chunk_bytes=64 * 1024, part_bytes=5 * 1024 * 1024, now=now)
    for _ in range(6):
        await upload.write(b"z" * 1024 * 1024)
    await upload.finish()
    retention = s3_client.get_object_retention(Bucket=settings.bucket, Key=key)["Retention"]
    assert retention.get("Mode") == "GOVERNANCE"
    until = retention.get("RetainUntilDate")
    assert until is not None
    assert timedelta(hours=23) < until - now <= timedelta(days=1, minutes=5)
    assert s3_client.head_object(Bucket=settings.bucket, Key=key)["ContentLength"] == upload.object_bytes
