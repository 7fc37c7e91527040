"""Fuzzing ingest over real HTTP against the real Kafka (Hypothesis; the profile sets the number of cases).

The issue's properties, checked on the real app served by uvicorn and producing to a fresh topic:

- whatever is sent, ingest answers below 500 while Kafka is healthy — and exactly what Meta's contract says:
  413 over the cap, 401 without a valid signature, 400 for a body that is not a webhook, 200 otherwise;
- the topic then holds exactly the events of the requests answered 200, and nothing of any request refused;
- replayed, reordered and re-serialised deliveries (signed by any configured app) land under the event ids and
  keys of the first delivery, so the archive, which merges on event_id, stores each event once.

Hypothesis drives a synchronous client from a worker thread while the app is served in the test's event loop,
so every case is a real request; the topic is read back once all cases (shrinking included) are done.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import string
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qs

import asyncpg
import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from devtools import pipeline
from devtools.broker import committed_offsets, create_topic, read_to_end
from devtools.serving import serve_asgi
from services.core.events import Event, WebhookRejected, decode_webhook, parse_webhook, webhook_scope
from services.core.journal import split_record
from services.core.settings import KafkaSettings
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from services.ingest.signature import sign
from services.tools.replay import meta_encode
from tests.helpers.webhook_strategies import (
    JSON_VALUES,
    OTHER_OBJECTS,
    SAMPLE_VALUES,
    SAMPLES,
    encoded,
    mutated_samples,
    sample_bodies,
)

pytestmark = pytest.mark.integration

SECRET = b"fuzz-app-secret"
SECOND_SECRET = b"fuzz-second-app-secret"  # a second Meta app delivering to the same endpoint
FOREIGN_SECRET = b"someone-elses-app-secret"
# '~' is outside the alphabet of the fuzzed query strings, so only a deliberate handshake can present the token.
VERIFY_TOKEN = "fuzz~verify~token"
# Small, so that the fuzzer reaches the cap with bodies of a few kilobytes; every sample payload is below it.
MAX_BODY_BYTES = 8 * 1024
WEBHOOK_PATH = "/webhooks/whatsapp"
PARTITIONS = 3
P = ParamSpec("P")
T = TypeVar("T")

CASES = settings().max_examples  # of the profile loaded by conftest
# Generous per-case budgets (a case costs a few milliseconds here), so the profile alone sets the test's length.
FUZZ_TIMEOUT_S = max(120.0, 0.06 * CASES)
REDELIVERY_TIMEOUT_S = max(120.0, 0.15 * CASES)


# --- the app under test ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ingest:
    url: str
    topic: str


@pytest.fixture
async def ingest(kafka_bootstrap: str) -> AsyncIterator[Ingest]:
    topic = await create_topic(kafka_bootstrap, partitions=PARTITIONS, prefix="fuzz")
    app = IngestApp(
        IngestSettings(
            app_secrets=[SecretStr(SECRET.decode()), SecretStr(SECOND_SECRET.decode())],
            verify_token=SecretStr(VERIFY_TOKEN),
            kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, events_topic=topic),
            # The longest deadline allowed: a slow acknowledgement on a shared machine is not what is under test.
            produce_deadline_s=15,
            max_body_bytes=MAX_BODY_BYTES,
        )
    )
    async with serve_asgi(app) as url:
        await app.producer.wait_connected(20)
        yield Ingest(url, topic)


def events_of(body: bytes) -> list[Event]:
    return parse_webhook(body, raw_sha256=hashlib.sha256(body).hexdigest(), signature=None, received_at="-")


# In Python 3.11 the JSON decoder and encoders share the recursion limit with the Python frames below them, so
# how deeply nested a body may be depends on the stack it is decoded on (and on the limit, which Hypothesis
# raises while it runs cases: the server, in this interpreter, decodes under the raised limit too). The oracle
# decodes on a fresh thread, with more room than the server has, and again under this many frames, more than
# the server's stack holds (pytest, asyncio, uvicorn and the app take about a hundred); a body nested between
# the two may go either way.
SERVER_STACK_FRAMES = 300


def accepted(body: bytes) -> None:
    """Ingest's own check (it journals the POST; the archiver splits it): WebhookRejected if refused."""
    webhook_scope(decode_webhook(body))


def accepted_under_frames(body: bytes, frames: int) -> None:
    return accepted(body) if frames == 0 else accepted_under_frames(body, frames - 1)


def on_fresh_stack(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    with ThreadPoolExecutor(max_workers=1) as fresh:
        return fresh.submit(function, *args, **kwargs).result()


def with_room(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``function`` on a fresh stack under a recursion limit above the deepest nesting a body under the cap
    can have (half its bytes): the records hold values about as deeply nested as the bodies the server decoded,
    under the limit Hypothesis raises while it runs cases, and decoding or comparing them recurses as deeply."""

    def run() -> T:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, MAX_BODY_BYTES))
        try:
            return function(*args, **kwargs)
        finally:
            sys.setrecursionlimit(limit)

    return on_fresh_stack(run)


def envelopes(records: list[tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]]) -> list[tuple[bytes, Any]]:
    """(conversation key, envelope) of each event the archiver splits out of the journal ``records``; each
    record keyed by the business number of its POST."""

    def split() -> list[tuple[bytes, Any]]:
        found: list[tuple[bytes, Any]] = []
        for key, value, headers in records:
            assert key.decode() == webhook_scope(decode_webhook(value))[0]
            journaled = split_record(value, headers)
            assert journaled.fault is None, journaled.fault
            found.extend((event.key(), json.loads(event.to_json())) for event in journaled.events)
        return found

    return with_room(split)


def altered_payloads(decoded: list[tuple[bytes, Any]], payloads: dict[str, Any]) -> list[str]:
    """The event ids whose record does not carry the payload as ``payloads`` has it."""
    return with_room(lambda: [e["event_id"] for _key, e in decoded if e["payload"] != payloads[e["event_id"]]])


def produced_pairs(decoded: list[tuple[bytes, Any]]) -> Counter[tuple[str, bytes]]:
    return Counter((envelope["event_id"], key) for key, envelope in decoded)


# --- what to send ------------------------------------------------------------------------------------------------


@st.composite
def envelope_variants(draw: st.DrawFn) -> Any:
    """A real sample whose envelope is broken in one of the ways the splitter checks, or emptied."""
    body = copy.deepcopy(draw(SAMPLE_VALUES))
    variant = draw(st.sampled_from(["object", "no object", "entry", "no entry", "no entries", "entry item"]))
    if variant == "object":
        body["object"] = draw(OTHER_OBJECTS)
    elif variant == "no object":
        del body["object"]
    elif variant == "entry":
        body["entry"] = draw(JSON_VALUES)
    elif variant == "no entry":
        del body["entry"]
    elif variant == "no entries":  # a valid, empty webhook: 200 and nothing to produce
        body["entry"] = []
    else:
        body["entry"].append(draw(JSON_VALUES))
    return body


@st.composite
def corrupted_samples(draw: st.DrawFn) -> bytes:
    """A real sample's bytes, truncated, spliced, padded (possibly past the cap) or given non-JSON tokens."""
    raw = draw(SAMPLES)
    at = draw(st.integers(min_value=0, max_value=len(raw)))
    how = draw(st.sampled_from(["truncate", "insert", "pad", "trailing", "nan", "duplicate key", "deep"]))
    if how == "truncate":
        return raw[:at]
    if how == "insert":
        return raw[:at] + draw(st.binary(min_size=1, max_size=3)) + raw[at:]
    if how == "pad":  # whitespace is valid JSON: the size alone decides, right at the cap too
        size = draw(st.integers(MAX_BODY_BYTES - 1, MAX_BODY_BYTES + 1) | st.integers(0, 2 * MAX_BODY_BYTES))
        return raw + b" " * max(0, size - len(raw))
    if how == "trailing":
        return raw + draw(st.sampled_from([b"x", b"{}", b"\x00", b",", b"]"]))
    if how == "deep":  # about where the decoder's and the encoders' recursion limits lie
        depth = draw(st.integers(min_value=900, max_value=1100) | st.integers(min_value=1, max_value=3000))
        inside = draw(st.sampled_from([i + 1 for i, byte in enumerate(raw) if byte == ord("{")]))
        return raw[:inside] + b'"deep":' + b"[" * depth + b"]" * depth + b"," + raw[inside:]
    if how == "nan":
        return b'{"x":' + draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"])) + b"," + raw[1:]
    return b'{"object":"page",' + raw[1:]  # the last duplicate wins in json.loads: still a whatsapp webhook


BODIES = st.one_of(
    st.binary(max_size=400),
    encoded(JSON_VALUES),
    encoded(mutated_samples()),
    encoded(envelope_variants()),
    corrupted_samples(),
    encoded(SAMPLE_VALUES),
    SAMPLES,
)

HEX = "0123456789abcdef"
SIGNATURE_VARIANTS = [
    "missing",
    "empty",
    "other secret",
    "other bytes",
    "upper-case prefix",
    "sha1",
    "no prefix",
    "truncated",
    "extended",
    "one digit changed",
    "random hex",
    "garbage",
]


@st.composite
def signatures(draw: st.DrawFn, body: bytes) -> str | None:
    """An ``X-Hub-Signature-256`` value for ``body``: valid (either app, either case) about two times in three."""
    if draw(st.integers(min_value=0, max_value=2)) < 2:
        secret = draw(st.sampled_from([SECRET, SECOND_SECRET]))
        correct = sign(body, secret)
        return correct.upper().replace("SHA256=", "sha256=") if draw(st.booleans()) else correct
    correct = sign(body, SECRET)
    digest = correct.removeprefix("sha256=")
    variant = draw(st.sampled_from(SIGNATURE_VARIANTS))
    if variant == "missing":
        return None
    if variant == "empty":
        return ""
    if variant == "other secret":
        return sign(body, FOREIGN_SECRET)
    if variant == "other bytes":
        return sign(draw(st.binary(max_size=64)), SECRET)
    if variant == "upper-case prefix":
        return "SHA256=" + digest
    if variant == "sha1":
        return "sha1=" + hmac.new(SECRET, body, hashlib.sha1).hexdigest()
    if variant == "no prefix":
        return digest
    if variant == "truncated":
        return correct[: draw(st.integers(min_value=0, max_value=len(correct) - 1))]
    if variant == "extended":
        return correct + draw(st.sampled_from(["0", "a", "=", "00"]))
    if variant == "one digit changed":
        at = draw(st.integers(min_value=0, max_value=len(digest) - 1))
        digit = draw(st.sampled_from(HEX).filter(lambda d: d != digest[at]))
        return "sha256=" + digest[:at] + digit + digest[at + 1 :]
    if variant == "random hex":
        return "sha256=" + draw(st.text(alphabet=HEX + "ABCDEF", min_size=64, max_size=64))
    # Header values are sent as latin-1 and the HTTP parser trims surrounding blanks: printable, no whitespace.
    return draw(st.sampled_from(["sha256=", ""])) + draw(
        st.text(alphabet=string.ascii_letters + string.digits + string.punctuation, max_size=80)
    )


@dataclass(frozen=True)
class FuzzRequest:
    method: str
    path: str
    query: str
    content_type: str | None
    body: bytes
    signature: str | None
    chunk_size: int | None  # None: sent with Content-Length; else chunked transfer in pieces of this size


@dataclass(frozen=True)
class Answer:
    """What ingest may answer — one status, or 200 or 400 for a body nested about as deeply as the stack allows —
    the events a 200 must produce, and the text a handshake must echo."""

    statuses: frozenset[int]
    events: tuple[Event, ...] = ()
    text: bytes | None = None

    @classmethod
    def only(cls, status: int, text: bytes | None = None) -> Answer:
        return cls(frozenset({status}), text=text)


QUERY_ALPHABET = string.ascii_letters + string.digits + "=&._-+"
NOT_WEBHOOK_PATHS = ["/webhooks/whatsapp/", "/webhooks/WhatsApp", "/webhooks", "/webhooks/whatsapp/x"]


@st.composite
def fuzz_requests(draw: st.DrawFn) -> FuzzRequest:
    """Mostly POSTs to the webhook; now and then another method or a path next to it, or Meta's handshake."""
    body = draw(BODIES)
    path = draw(st.sampled_from(NOT_WEBHOOK_PATHS)) if draw(st.integers(0, 19)) == 19 else WEBHOOK_PATH
    method = (
        draw(st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "OPTIONS"])) if draw(st.integers(0, 9)) == 9 else "POST"
    )
    if method == "GET" and draw(st.booleans()):
        challenge = draw(st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=20))
        query = f"hub.mode=subscribe&hub.challenge={challenge}&hub.verify_token={VERIFY_TOKEN}"
    else:
        query = draw(st.text(alphabet=QUERY_ALPHABET, max_size=40))
    return FuzzRequest(
        method=method,
        path=path,
        query=query,
        content_type=draw(
            st.none()
            | st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""])
            | st.text(alphabet=string.ascii_letters + string.digits + "/;=-+. ", max_size=30).map(str.strip)
        ),
        body=body,
        signature=draw(signatures(body)),
        chunk_size=draw(st.none() | st.integers(min_value=1, max_value=4096)),
    )


def signature_is_valid(body: bytes, header: str | None) -> bool:
    """Meta's rule, written independently of services.ingest.signature: ``sha256=`` and the 64-hex-digit
    HMAC-SHA256 of the raw body under one of the app secrets (hex case does not matter)."""
    if header is None or not header.startswith("sha256="):
        return False
    offered = header.removeprefix("sha256=")
    if len(offered) != 64 or not set(offered) <= set(string.hexdigits):
        return False
    return any(offered.lower() == hmac.new(s, body, hashlib.sha256).hexdigest() for s in (SECRET, SECOND_SECRET))


def expected_answer(request: FuzzRequest) -> Answer:
    """What ingest must answer, and which events it must produce (only ever for a 200 to a POST)."""
    if request.path != WEBHOOK_PATH:
        return Answer.only(404)
    if request.method == "GET":
        query = parse_qs(request.query)
        subscribe = query.get("hub.mode") == ["subscribe"] and query.get("hub.verify_token") == [VERIFY_TOKEN]
        challenge = query.get("hub.challenge", [""])[0]
        return Answer.only(200, text=challenge.encode()) if subscribe and challenge else Answer.only(403)
    if request.method != "POST":
        return Answer.only(405)
    if len(request.body) > MAX_BODY_BYTES:
        return Answer.only(413)
    if not signature_is_valid(request.body, request.signature):
        return Answer.only(401)
    try:
        on_fresh_stack(accepted, request.body)
    except WebhookRejected:
        return Answer.only(400)
    # What the archiver splits out of the journaled POST (with room on its stack: services/core/journal.py).
    events = tuple(with_room(events_of, request.body))
    try:
        on_fresh_stack(accepted_under_frames, request.body, SERVER_STACK_FRAMES)
    except WebhookRejected:
        return Answer(frozenset({200, 400}), events)
    return Answer(frozenset({200}), events)


def send(client: httpx.Client, base_url: str, request: FuzzRequest) -> httpx.Response:
    headers = {}
    if request.signature is not None:
        headers["x-hub-signature-256"] = request.signature
    if request.content_type is not None:
        headers["content-type"] = request.content_type
    url = f"{base_url}{request.path}" + (f"?{request.query}" if request.query else "")
    if request.chunk_size is None:
        return client.request(request.method, url, content=request.body, headers=headers)
    size, body = request.chunk_size, request.body
    pieces = iter([body[i : i + size] for i in range(0, len(body), size)])
    return client.request(request.method, url, content=pieces, headers=headers)


def message_with(members: bytes) -> bytes:
    """A one-message webhook whose message also holds ``members``, written exactly as given."""
    return (
        b'{"object":"whatsapp_business_account","entry":[{"id":"102290129340398","changes":[{"field":"messages",'
        b'"value":{"metadata":{"phone_number_id":"106540352242922"},"messages":[{"from":"16505551234",'
        b'"id":"wamid.FUZZ-PINNED","timestamp":"1764000000","type":"text","text":{"body":"hi"}' + members + b"}]}}]}]}"
    )


def signed_post(body: bytes, chunk_size: int | None = None) -> FuzzRequest:
    return FuzzRequest("POST", WEBHOOK_PATH, "", "application/json", body, sign(body, SECRET), chunk_size)


def padded(size: int) -> bytes:
    body = message_with(b"")
    return body + b" " * (size - len(body))


# --- the tests ---------------------------------------------------------------------------------------------------


@pytest.mark.timeout(FUZZ_TIMEOUT_S)
async def test_fuzzed_requests_get_no_5xx_and_only_accepted_webhooks_are_produced(
    kafka_bootstrap: str, ingest: Ingest
) -> None:
    answered: list[tuple[int, Answer]] = []

    with httpx.Client(timeout=30) as client:

        @given(fuzz_requests())
        # Pinned, so that every run has them: the cap exactly, and one byte over it, announced or chunked...
        @example(signed_post(padded(MAX_BODY_BYTES)))
        @example(signed_post(padded(MAX_BODY_BYTES + 1)))
        @example(signed_post(padded(MAX_BODY_BYTES + 1), chunk_size=1000))
        # ... and what this test found: a number beyond the double range, which decodes to inf (and orjson then
        # writes as null), alone and beside an integer beyond 64 bits (where the stdlib fallback refuses inf).
        @example(signed_post(message_with(b',"x":1e400')))
        @example(signed_post(message_with(b',"x":1e400,"y":18446744073709551616')))
        def one_request(request: FuzzRequest) -> None:
            expected = expected_answer(request)
            response = send(client, ingest.url, request)
            answered.append((response.status_code, expected))
            assert response.status_code < 500, f"{response.status_code} {response.text!r} while Kafka is healthy"
            assert response.status_code in expected.statuses, response.text
            if expected.text is not None:
                assert response.content == expected.text

        # In a worker thread: the app is served by this thread's event loop, which must keep running.
        await asyncio.to_thread(one_request)

    accepted = [event for status, answer in answered if status == 200 for event in answer.events]
    assert accepted, "no case produced an event: the strategies no longer reach the happy path"
    assert any(status >= 400 for status, _answer in answered), "no case was refused: the error paths are not reached"
    decoded = envelopes(await read_to_end(kafka_bootstrap, ingest.topic))
    # Exactly the events of the accepted webhooks, each as often as it was accepted; nothing of a refused one.
    assert produced_pairs(decoded) == Counter((event.event_id, event.key()) for event in accepted)
    # And each with Meta's object as it came, whatever the fuzzer put in it.
    assert altered_payloads(decoded, {event.event_id: event.payload for event in accepted}) == []


def reversed_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: reversed_keys(value[key]) for key in reversed(value)}
    if isinstance(value, list):
        return [reversed_keys(item) for item in value]
    return value


def reencoded(body: bytes, how: str) -> bytes:
    """The same webhook as another byte sequence: Meta's retries need not repeat the first delivery's bytes."""
    value = json.loads(body)
    if how == "as first sent":
        return body
    if how == "raw UTF-8":
        return json.dumps(value, ensure_ascii=False).encode()
    if how == "indented":
        return json.dumps(value, indent=2).encode()
    if how == "keys reversed":
        return meta_encode(json.dumps(reversed_keys(value)).encode())
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


ENCODINGS = ["as first sent", "raw UTF-8", "indented", "keys reversed", "keys sorted"]


@dataclass(frozen=True)
class Delivery:
    webhook: int  # index of the webhook delivered
    encoding: str
    secret: bytes


def delivery_sequences(webhooks: int) -> st.SearchStrategy[list[Delivery]]:
    """Some webhooks, each delivered at least once, some again (in any wire form, by any app), in any order."""

    @st.composite
    def sequences(draw: st.DrawFn) -> list[Delivery]:
        picked = draw(st.lists(st.integers(0, webhooks - 1), min_size=1, max_size=4, unique=True))
        again = draw(st.lists(st.sampled_from(picked), max_size=6))
        order = draw(st.permutations(picked + again))
        return [
            Delivery(index, draw(st.sampled_from(ENCODINGS)), draw(st.sampled_from([SECRET, SECOND_SECRET])))
            for index in order
        ]

    return sequences()


def fresh_webhooks() -> tuple[str, list[bytes]]:
    """A WABA new to the archive (the database outlives test runs) and its webhooks: synthetic ones, and every
    sample payload moved to it (the WABA id is part of every event id, so none of them was archived before)."""
    waba_id = pipeline.digits(15)
    alice = pipeline.Person(waba_id, pipeline.digits(15), "1" + pipeline.digits(10))
    bob = pipeline.Person(waba_id, pipeline.digits(15), "1" + pipeline.digits(10))
    wamid = f"wamid.FUZZ-{uuid.uuid4().hex}"
    synthetic = [
        pipeline.text_message(alice, wamid, "hello / héllo ✓", 1_764_000_000),
        pipeline.status(alice, wamid, "sent", 1_764_000_001),
        pipeline.status(alice, wamid, "delivered", 1_764_000_002),
        pipeline.edit(alice, f"{wamid}-edit", wamid, "hello again", 1_764_000_003),
        pipeline.revoke(alice, f"{wamid}-revoke", wamid, 1_764_000_004),
        pipeline.echo(bob, f"{wamid}-echo", "from the business", 1_764_000_005),
        pipeline.text_message(bob, f"{wamid}-bob", "hi", 1_764_000_006),
    ]
    webhooks = [json.loads(body) for body in synthetic]
    # Two entries in one POST, as Meta batches them.
    webhooks.append({"object": "whatsapp_business_account", "entry": webhooks[0]["entry"] + webhooks[-1]["entry"]})
    for sample in sample_bodies():
        webhook = json.loads(sample)
        for entry in webhook["entry"]:
            entry["id"] = waba_id
        webhooks.append(webhook)
    return waba_id, [meta_encode(json.dumps(webhook).encode()) for webhook in webhooks]


@pytest.mark.timeout(REDELIVERY_TIMEOUT_S)
async def test_replayed_and_reordered_deliveries_land_under_the_first_ids_and_archive_once(
    kafka_bootstrap: str, ingest: Ingest, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    waba_id, webhooks = fresh_webhooks()
    first_events = [events_of(body) for body in webhooks]
    first_payloads = {event.event_id: event.payload for events in first_events for event in events}
    delivered: Counter[tuple[str, bytes]] = Counter()
    posts = 0

    with httpx.Client(timeout=30) as client:

        @given(delivery_sequences(len(webhooks)))
        def deliver(sequence: list[Delivery]) -> None:
            for delivery in sequence:
                body = reencoded(webhooks[delivery.webhook], delivery.encoding)
                headers = {"content-type": "application/json", "x-hub-signature-256": sign(body, delivery.secret)}
                response = client.post(f"{ingest.url}{WEBHOOK_PATH}", content=body, headers=headers)
                assert response.status_code == 200, (delivery, response.text)
                nonlocal posts
                posts += 1
                delivered.update((event.event_id, event.key()) for event in first_events[delivery.webhook])

        await asyncio.to_thread(deliver)

    journal = await read_to_end(kafka_bootstrap, ingest.topic)
    assert len(journal) == posts, "one record per delivered POST"
    decoded = envelopes(journal)
    # Every copy carries the id and the conversation key of the first delivery's event, and its content; each POST
    # was keyed by its business number (envelopes() checks), so the copies share the first one's partition.
    assert produced_pairs(decoded) == delivered
    assert any(count > 1 for count in delivered.values()), "no event was delivered twice"
    assert altered_payloads(decoded, first_payloads) == []

    # The archive stores each event once: one row per distinct event of this WABA and nothing else; every copy
    # was consumed and committed, none dead-lettered.
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="fuzz-dlq")
    archiver = pipeline.archiver_settings(demo_env, ingest.topic, dlq, f"test/fuzz-{uuid.uuid4().hex[:8]}")
    distinct = {event_id for event_id, _key in delivered}
    # About 350 records a second here: most are copies, behind the first ones that wait_indexed sees.
    deadline = time.monotonic() + max(60.0, 0.03 * CASES)
    async with pipeline.running_archiver(archiver):
        await pipeline.wait_indexed(pg_pool, distinct, timeout_s=deadline - time.monotonic())
        committed = 0
        while committed < len(journal) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)  # the archiver commits about once a second
            offsets = await committed_offsets(kafka_bootstrap, archiver.group_id, ingest.topic, PARTITIONS)
            committed = sum(offsets.values())
    assert committed == len(journal)
    archived = await pg_pool.fetch(
        "SELECT encode(event_id, 'hex') AS event_id FROM archived_events WHERE waba_id = $1", waba_id
    )
    assert sorted(row["event_id"] for row in archived) == sorted(distinct)
    assert await read_to_end(kafka_bootstrap, dlq, partitions=1) == []
