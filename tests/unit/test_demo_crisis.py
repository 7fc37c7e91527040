"""The crisis of `make run`'s demo, as the archive will see it: each body split by the splitter ingest uses and read
back as the archiver reads it from Kafka, then checked for what the review console is to show."""

from __future__ import annotations

import hashlib
import re
from collections import Counter

import orjson
import pytest

from devtools.demo_crisis import (
    CAMILLE,
    CORRECTED_PRICE,
    CUSTOMERS,
    LEA,
    MARKUP_TEXTS,
    ORDER_CONFIRMATION,
    PHOTO_CAPTION,
    SEARCH_KEYWORDS,
    WRONG_PRICE,
    Customer,
    crisis_messages,
    crisis_webhooks,
)
from devtools.devrun import DEMO_PHONE_NUMBER_ID
from devtools.graph_api import FakeGraphApi, seed_demo_media
from devtools.samples import PAYLOADS_DIR
from services.archiver.media import media_ref, sha256_matches
from services.core.events import Event, Subject, parse_webhook
from services.core.keywords import searchable_text, words

pytestmark = pytest.mark.unit

NOW = 1_767_225_600  # 2026-01-01 00:00:00 UTC
IDS = crisis_messages(NOW)
BODIES = crisis_webhooks(NOW)
EDIT_WINDOW_S = 15 * 60  # Meta: a message can be edited for 15 minutes
REVOKE_WINDOW_S = 2 * 24 * 3600  # and deleted for everyone for 2 days
# Numbers kept for fiction: ARCEP's 06 39 98 xx xx, North America's 555-01xx, Ofcom's 07700 900xxx.
FICTIONAL_NUMBER = re.compile(r"33639980\d{3}|1\d{3}55501\d{2}|447700900\d{3}")


def archived_events(bodies: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for body in bodies:
        split = parse_webhook(body, raw_sha256=hashlib.sha256(body).hexdigest(), signature=None, received_at="-")
        events.extend(Event.from_json(event.to_json()) for event in split)
    return events


EVENTS = archived_events(BODIES)
BY_MESSAGE_ID = {e.message_id: e for e in EVENTS if e.kind != "status"}


def subject(customer: Customer) -> Subject:
    return Subject(wa_id=customer.wa_id, user_id=None)


def searchable_words(event: Event) -> set[str]:
    """The words the keyword index holds for the event (services/core/keywords.py)."""
    return {word for text in searchable_text(event.kind, event.payload) for word in words(text)}


def text_of(event: Event) -> str:
    assert event.type == "text"
    body: str = event.payload["text"]["body"]
    return body


def test_every_body_is_one_event_of_the_demo_business_in_metas_encoding() -> None:
    samples_waba = orjson.loads((PAYLOADS_DIR / "inbound_revoke_coexistence.json").read_bytes())["entry"][0]["id"]
    assert len(EVENTS) == len(BODIES)
    assert {e.phone_number_id for e in EVENTS} == {DEMO_PHONE_NUMBER_ID}
    assert {e.waba_id for e in EVENTS} == {samples_waba}
    assert all(body.isascii() for body in BODIES)  # Meta escapes non-ASCII characters as \uXXXX


@pytest.mark.parametrize(
    ("name", "kind", "type_", "original", "customer"),
    [
        pytest.param("order", "message", "text", None, CAMILLE, id="the order confirmation"),
        pytest.param("order_revoke", "message", "revoke", "order", CAMILLE, id="the order deleted for everyone"),
        pytest.param("price", "echo", "text", None, CAMILLE, id="the wrong price, from the business app"),
        pytest.param("price_edit", "echo", "edit", "price", CAMILLE, id="the price edited"),
        pytest.param("photo", "message", "image", None, LEA, id="the photo of the damaged parcel"),
        pytest.param("photo_revoke", "message", "revoke", "photo", LEA, id="the photo deleted for everyone"),
    ],
)
def test_the_crisis(name: str, kind: str, type_: str, original: str | None, customer: Customer) -> None:
    event = BY_MESSAGE_ID[getattr(IDS, name)]
    assert (event.kind, event.type) == (kind, type_)
    assert event.field == ("smb_message_echoes" if kind == "echo" else "messages")
    assert event.subject == subject(customer)
    assert event.original_message_id == (getattr(IDS, original) if original else None)
    if original is not None:
        target = BY_MESSAGE_ID[getattr(IDS, original)]
        assert event.timestamp is not None
        assert target.timestamp is not None
        window = EDIT_WINDOW_S if type_ == "edit" else REVOKE_WINDOW_S
        assert 0 < event.timestamp - target.timestamp <= window


def test_the_crisis_says_what_the_console_must_show() -> None:
    assert text_of(BY_MESSAGE_ID[IDS.order]) == ORDER_CONFIRMATION
    assert text_of(BY_MESSAGE_ID[IDS.price]) == WRONG_PRICE
    edit = BY_MESSAGE_ID[IDS.price_edit].payload["edit"]
    assert edit["message"] == {"type": "text", "text": {"body": CORRECTED_PRICE}}
    assert BY_MESSAGE_ID[IDS.photo].payload["image"]["caption"] == PHOTO_CAPTION
    order = BY_MESSAGE_ID[IDS.order]
    assert order.contact == {"profile": {"name": "Camille Martin"}, "wa_id": CAMILLE.wa_id}


def test_the_photo_is_served_by_the_graph_api_stand_in_with_the_hash_the_webhook_carries() -> None:
    ref = media_ref(BY_MESSAGE_ID[IDS.photo].type, BY_MESSAGE_ID[IDS.photo].payload)
    assert ref is not None
    assert ref.sha256 is not None
    stand_in = FakeGraphApi(token="t")
    seed_demo_media(stand_in, PAYLOADS_DIR)  # what `make run` starts it with (--seed)
    data, mime_type = stand_in.media[ref.media_id]
    assert sha256_matches(data, ref.sha256)
    assert mime_type == ref.mime_type == "image/png"


def test_the_markup_texts_are_archived_verbatim() -> None:
    texts = [text_of(e) for e in EVENTS if e.kind in ("message", "echo") and e.type == "text"]
    for markup in MARKUP_TEXTS:
        assert texts.count(markup) == 1
    assert MARKUP_TEXTS == ('<script>alert("xss")</script>', "<img src=x onerror=alert(1)>")


def test_ordinary_traffic_in_both_directions_with_delivery_statuses() -> None:
    messages = [e for e in EVENTS if e.kind in ("message", "echo")]
    assert 4 <= len(CUSTOMERS) <= 6
    assert {e.subject for e in EVENTS} == {subject(c) for c in CUSTOMERS}
    assert len([e for e in messages if e.type == "text"]) >= 25
    directions = Counter((e.subject, e.kind) for e in messages)
    for customer in CUSTOMERS:
        assert directions[subject(customer), "message"] >= 1, customer
        assert directions[subject(customer), "echo"] >= 1, customer
    statuses = [e for e in EVENTS if e.kind == "status"]
    assert {e.type for e in statuses} == {"delivered", "read"}
    for status in statuses:  # each about a message the business sent that customer
        sent = BY_MESSAGE_ID[status.message_id]
        assert (sent.kind, sent.subject) == ("echo", status.subject)
        assert sent.timestamp is not None
        assert status.timestamp is not None
        assert status.timestamp > sent.timestamp


@pytest.mark.parametrize("keyword", SEARCH_KEYWORDS)
def test_each_suggested_search_finds_messages(keyword: str) -> None:
    assert any(words(keyword) <= searchable_words(e) for e in EVENTS), keyword


def test_the_texts_have_french_accents() -> None:
    texts = " ".join(t for e in EVENTS for t in searchable_text(e.kind, e.payload))
    for word in ("Électricité", "remboursement", "code promo", "abîmé", "€"):
        assert word in texts


def test_a_few_days_oldest_first_and_nothing_in_the_future() -> None:
    times = [e.timestamp for e in EVENTS if e.timestamp is not None]
    assert len(times) == len(EVENTS)
    assert times == sorted(times)
    assert min(times) >= NOW - 4 * 24 * 3600
    assert max(times) <= NOW


def test_the_same_now_gives_the_same_bodies_and_each_run_its_own_messages() -> None:
    assert crisis_webhooks(NOW) == BODIES
    assert len({e.event_id for e in EVENTS}) == len(EVENTS)
    later = archived_events(crisis_webhooks(NOW + 1))
    assert not {e.event_id for e in later} & {e.event_id for e in EVENTS}
    assert not {e.message_id for e in later} & {e.message_id for e in EVENTS}


def test_nobody_is_a_real_person() -> None:
    assert len({c.wa_id for c in CUSTOMERS}) == len(CUSTOMERS)
    for customer in CUSTOMERS:
        assert FICTIONAL_NUMBER.fullmatch(customer.wa_id), customer
    contacts = {e.contact["wa_id"]: e.contact["profile"]["name"] for e in EVENTS if e.contact is not None}
    assert contacts == {c.wa_id: c.name for c in CUSTOMERS}
