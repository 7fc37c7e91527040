"""The timeline's pure part: decrypted messages to bubbles as a phone shows them, and its pages."""

from __future__ import annotations

from typing import Any

import pytest

from services.console.timeline import bubbles
from services.review.assembly import assemble, keyword_matches
from services.review.display import content_of

pytestmark = pytest.mark.unit

T = 1_760_000_000


def event(n: int, kind: str, payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"{n:032x}",
        "kind": kind,
        "type": payload.get("type"),
        "message_id": payload.get("id"),
        "timestamp": int(payload.get("timestamp", T + n)),
        "received_at": f"2026-01-01T00:00:{n:02d}Z",
        "payload": payload,
        **extra,
    }


def text(wamid: str, body: str, ts: int, **extra: Any) -> dict[str, Any]:
    return {"id": wamid, "timestamp": str(ts), "type": "text", "text": {"body": body}, **extra}


def crisis() -> list[dict[str, Any]]:
    return [
        event(1, "message", text("wamid.1", "Je confirme la commande 4471", T)),
        event(
            2,
            "message",
            {
                "id": "wamid.2",
                "timestamp": str(T + 180),
                "type": "revoke",
                "revoke": {"original_message_id": "wamid.1"},
            },
            original_message_id="wamid.1",
        ),
        event(3, "echo", text("wamid.3", "Le prix est de 1 200 €", T + 300)),
        event(4, "status", {"id": "wamid.3", "timestamp": str(T + 301), "type": "delivered"}),
        event(5, "status", {"id": "wamid.3", "timestamp": str(T + 302), "type": "read"}),
        event(
            6,
            "echo",
            {
                "id": "wamid.6",
                "timestamp": str(T + 400),
                "type": "edit",
                "edit": {"original_message_id": "wamid.3", "message": {"type": "text", "text": {"body": "12 000 €"}}},
            },
            original_message_id="wamid.3",
        ),
        event(7, "message", text("wamid.7", "Pourquoi ce prix ?", T + 500, context={"id": "wamid.3"})),
        event(
            8,
            "message",
            {
                "id": "wamid.8",
                "timestamp": str(T + 510),
                "type": "reaction",
                "reaction": {"message_id": "wamid.3", "emoji": "😮"},
            },
        ),
        event(9, "message", text("wamid.9", "Et celui-là ?", T + 520, context={"id": "wamid.unknown"})),
    ]


def test_a_crisis_as_a_phone_shows_it() -> None:
    messages = assemble(crisis())
    timeline = bubbles(messages)
    by_text = {b.content.text: b for b in timeline}
    assert [b.content.text for b in timeline] == [
        "Je confirme la commande 4471",
        "12 000 €",
        "Pourquoi ce prix ?",
        "Et celui-là ?",
    ]  # the reaction is on its message, not a bubble of its own

    deleted = by_text["Je confirme la commande 4471"]
    assert (deleted.deleted_by, deleted.seconds_to_deletion, deleted.direction) == ("customer", 180, "inbound")

    price = by_text["12 000 €"]
    assert price.edited
    assert [r.content.text for r in price.history] == ["Le prix est de 1 200 €", "12 000 €"]
    assert (price.direction, price.status, price.ticks) == ("outbound", "read", "✓✓")
    assert price.reactions == ["😮"]

    reply = by_text["Pourquoi ce prix ?"]
    assert reply.reply_to == price.event_id
    assert reply.reply_excerpt == "Le prix est de 1 200 €"  # the message as it was quoted: its original content
    assert by_text["Et celui-là ?"].reply_missing


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            {
                "type": "location",
                "location": {"name": "Entrepôt", "address": "1 rue X", "latitude": 48.8, "longitude": 2.3},
            },
            ("location", "", "Entrepôt", ("1 rue X", "48.8, 2.3")),
        ),
        (
            {"type": "contacts", "contacts": [{"name": {"formatted_name": "Ana B"}, "phones": [{"phone": "+33 6"}]}]},
            ("contacts", "", "", ("Ana B · +33 6",)),
        ),
        (
            {
                "type": "interactive",
                "interactive": {"type": "button_reply", "button_reply": {"id": "y", "title": "Oui"}},
            },
            ("interactive", "", "Oui", ()),
        ),
        (
            {
                "type": "order",
                "order": {
                    "text": "Merci",
                    "product_items": [
                        {"product_retailer_id": "sku1", "quantity": 2, "item_price": 30, "currency": "EUR"}
                    ],
                },
            },
            ("order", "Merci", "", ("2 × sku1 — 30 EUR",)),
        ),
        (
            {
                "type": "template",
                "template": {"name": "order_ready", "components": [{"parameters": [{"type": "text", "text": "4471"}]}]},
            },
            ("template", "", "order_ready", ("4471",)),
        ),
        ({"type": "image", "image": {"caption": "colis", "id": "m1"}}, ("image", "colis", "", ())),
        ({"type": "document", "document": {"filename": "facture.pdf"}}, ("document", "", "facture.pdf", ())),
        ({"type": "text", "text": None}, ("text", "", "", ())),
        ({"type": ["odd"]}, ("unknown", "", "", ())),  # a list names no type
        pytest.param(
            {
                "type": "edit",
                "edit": {"original_message_id": "wamid.gone", "message": {"type": "text", "text": {"body": "v2"}}},
            },
            ("edit", "v2", "", ()),
            id="an edit whose message is not archived shows what it became",
        ),
        pytest.param(
            {"type": "edit", "edit": {"message": "odd"}}, ("edit", "", "", ()), id="an edit without a message"
        ),
    ],
)
def test_content_by_type(message: dict[str, Any], expected: tuple[str, str, str, tuple[str, ...]]) -> None:
    content = content_of(message)
    assert (content.type, content.text, content.label, content.lines) == expected


def test_outbound_requests_are_shown_as_sent() -> None:
    request = {"messaging_product": "whatsapp", "to": "1555", "type": "text", "text": {"body": "Votre commande part"}}
    (bubble,) = bubbles(assemble([event(1, "outbound", {"request": request, "id": "wamid.o", "type": "text"})]))
    assert (bubble.direction, bubble.content.text) == ("outbound", "Votre commande part")


def test_keyword_matches_include_edits_and_ignore_case_and_accents() -> None:
    messages = assemble(crisis())
    assert keyword_matches(messages, "COMMANDE") == [f"{1:032x}"]
    assert keyword_matches(messages, "12 000") == [f"{3:032x}"]  # only the edit has it
    assert keyword_matches(messages, "pourquoi prix") == [f"{7:032x}"]
    assert keyword_matches(messages, "celui-la") == [f"{9:032x}"]
    assert keyword_matches(messages, "?") == []


def test_a_reply_to_a_message_off_the_page_shows_its_excerpt_without_a_link() -> None:
    messages = assemble(crisis())
    quoted = [m for m in messages if m.message_id == "wamid.3"]
    page = [m for m in messages if m.message_id in ("wamid.7", "wamid.8")]
    reply, reaction = bubbles(page, quoted=quoted)
    assert (reply.reply_to, reply.reply_excerpt) == (None, "Le prix est de 1 200 €")
    assert reaction.content.type == "reaction"  # its message is off the page: it stands alone
    assert reaction.content.text == "😮"


def test_a_group_message_in_a_persons_timeline_says_so() -> None:
    group = event(1, "message", text("wamid.g", "Qui vient samedi ?", T, group_id="Y2FwaV9ncm91cDox"))
    alone = event(2, "message", text("wamid.a", "Bonjour", T + 1))
    assert [b.in_group for b in bubbles(assemble([group, alone]))] == [True, False]
