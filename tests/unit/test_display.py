"""What a message shows (services/review/display.py): every message type of the sample webhooks, the changes a
message goes through, and a property over any JSON a message may carry."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.samples import payloads_dir
from services.core.events import split_webhook
from services.core.plaintext import DecodedRecord, read_envelope
from services.core.vocabulary import MESSAGE_KINDS
from services.review.assembly import Change, ConversationMessage, assemble
from services.review.display import Content, content_of, display

pytestmark = pytest.mark.unit


def sample_messages(name: str) -> list[ConversationMessage]:
    """The timeline items of the message kinds that a sample webhook's events assemble into."""
    body = json.loads((payloads_dir() / name).read_bytes())
    events = split_webhook(body, raw_sha256="0" * 64, signature=None, received_at="2026-01-01T00:00:00Z")
    decoded = [read_envelope(event.to_json()) for event in events]  # as the read side decodes them
    envelopes = [record.value for record in decoded if isinstance(record, DecodedRecord)]
    assert len(envelopes) == len(events)
    return [m for m in assemble(envelopes) if m.kind in MESSAGE_KINDS]


def shows(content: Content) -> tuple[str, str, str, tuple[str, ...]]:
    return content.type, content.text, content.label, content.lines


@pytest.mark.parametrize(
    ("sample", "expected", "plain"),
    [
        pytest.param("inbound_text.json", ("text", "Does it come in another color?", "", ()),
                     "Does it come in another color?", id="text"),
        pytest.param("inbound_image.json", ("image", "Taj Mahal", "", ()), "[image] Taj Mahal", id="image caption"),
        pytest.param("inbound_video.json", ("video", "Timelapse of growth", "", ()), "[video] Timelapse of growth",
                     id="video caption"),
        pytest.param("inbound_audio.json", ("audio", "", "", ()), "[audio]", id="audio"),
        pytest.param("inbound_sticker.json", ("sticker", "", "", ()), "[sticker]", id="sticker"),
        pytest.param("inbound_document.json", ("document", "my receipt", "receipt.pdf", ()), "[document] my receipt",
                     id="document caption and file name"),
        pytest.param("inbound_location.json",
                     ("location", "", "Philz Coffee",
                      ("101 Forest Ave, Palo Alto, CA 94301", "37.44221496582, -122.16165924072")),
                     "[location] Philz Coffee", id="location"),
        pytest.param("inbound_contacts.json", ("contacts", "", "", ("Barbara J. Johnson · +1 (415) 555-0829",)),
                     "[contacts]", id="contact card"),
        pytest.param("inbound_interactive_button_reply.json", ("interactive", "", "Cancel", ()),
                     "[interactive] Cancel", id="interactive button reply"),
        pytest.param("inbound_interactive_list_reply.json",
                     ("interactive", "", "Priority Mail Express", ("Next Day to 2 Days",)),
                     "[interactive] Priority Mail Express", id="interactive list reply"),
        pytest.param("inbound_interactive_nfm_reply_flow.json", ("interactive", "", "nfm_reply", ()),
                     "[interactive] nfm_reply", id="flow reply"),
        pytest.param("inbound_button_template_quick_reply.json", ("button", "", "Unsubscribe", ()),
                     "[button] Unsubscribe", id="template quick reply"),
        pytest.param("inbound_order.json",
                     ("order", "Love these!", "", ("2 × di9ozbzfi4 — 30 USD", "1 × nqryix03ez — 25 USD")),
                     "[order] Love these!", id="order"),
        pytest.param("inbound_reaction.json", ("reaction", "👍", "", ()), "[reaction] 👍", id="reaction"),
        pytest.param("inbound_reaction_removed.json", ("reaction", "", "", ()), "[reaction]", id="reaction removed"),
        pytest.param("inbound_system_user_changed_number.json",
                     ("system", "User Sheena Nelson changed from 16505551234 to 12195555358", "", ()),
                     "[system] User Sheena Nelson changed from 16505551234 to 12195555358", id="system notice"),
        pytest.param("inbound_unsupported_edit_131051.json", ("unsupported", "", "", ()), "[unsupported]",
                     id="unsupported"),
        pytest.param("inbound_edit_coexistence.json", ("edit", "Updated image caption", "", ()),
                     "[edit] Updated image caption", id="edit of a message not archived"),
        pytest.param("inbound_revoke_coexistence.json", ("revoke", "", "", ()), "[revoke]",
                     id="deletion of a message not archived"),
        pytest.param("smb_message_echoes_text.json",
                     ("text", "Here's the info you requested! https://www.meta.com/quest/quest-3/", "", ()),
                     "Here's the info you requested! https://www.meta.com/quest/quest-3/", id="echo"),
        pytest.param("history_media_asset.json", ("image", "Black Prince echeveria", "", ()),
                     "[image] Black Prince echeveria", id="history media"),
    ],
)  # fmt: skip
def test_every_message_type_of_the_samples_shows_its_content(
    sample: str, expected: tuple[str, str, str, tuple[str, ...]], plain: str
) -> None:
    (message,) = sample_messages(sample)
    shown = display(message)
    assert shows(shown.content) == expected
    assert shown.plain() == plain
    assert (shown.event_id, shown.direction, shown.sent_at) == (message.event_id, message.direction, message.timestamp)


def test_every_sample_message_is_shown_as_its_type() -> None:
    """No message kind of any sample is left out of the table above without being shown as its own type."""
    seen = set()
    for path in sorted(payloads_dir().glob("*.json")):
        for message in sample_messages(path.name):
            shown = display(message)
            assert shown.content.type == (message.payload.get("type") or message.type), path.name
            seen.add(shown.content.type)
    assert {"text", "image", "location", "contacts", "interactive", "order", "reaction", "system", "edit"} <= seen


def test_a_reply_names_the_message_it_quotes_and_a_reaction_its_target() -> None:
    (reply,) = sample_messages("inbound_text_reply_context.json")
    (reaction,) = sample_messages("inbound_reaction.json")
    assert (display(reply).quotes, display(reply).reacts_to) == ("wamid.xyzxyz==", None)
    assert display(reaction).reacts_to == reaction.payload["reaction"]["message_id"]
    assert display(reaction).quotes is None


def message(payload: Any, **extra: Any) -> ConversationMessage:
    fields: dict[str, Any] = {
        "event_id": "e" * 32,
        "message_id": "wamid.1",
        "kind": "message",
        "type": payload.get("type") if isinstance(payload, dict) else None,
        "direction": "inbound",
        "timestamp": 1_760_000_000,
        "received_at": "2026-01-01T00:00:00Z",
        "payload": payload,
    }
    return ConversationMessage(**(fields | extra))


def edit(at: int, body: str) -> Change:
    return Change("d" * 32, "edit", "customer", at, {"edit": {"message": {"type": "text", "text": {"body": body}}}})


def test_an_edited_and_deleted_message_shows_its_history_and_deletion() -> None:
    original = message({"type": "text", "text": {"body": "4417"}, "from": "33"})
    original.edits = [edit(1_760_000_060, "4471"), edit(1_760_000_120, "4471, merci")]
    original.deletion = Change("c" * 32, "revoke", "customer", 1_760_000_180, {})
    original.statuses = [("sent", 1), ("read", 3), ("delivered", 2)]
    shown = display(original)
    assert shows(shown.content) == ("text", "4471, merci", "", ())
    assert [(r.at, r.content.text) for r in shown.history] == [
        (1_760_000_000, "4417"),
        (1_760_000_060, "4471"),
        (1_760_000_120, "4471, merci"),
    ]
    assert shown.original.text == "4417"
    assert [r.content.text for r in shown.edits] == ["4471", "4471, merci"]
    assert shown.plain() == "4417"  # the table shows what was sent; the changes column shows the edits
    assert shown.deletion is original.deletion
    assert shown.status == "read"


def test_an_outbound_event_shows_the_request_it_sent() -> None:
    request = {"type": "interactive", "interactive": {"type": "button", "body": {"text": "Pick one"}}}
    shown = display(message({"request": request, "response": {}}, kind="outbound", type="interactive"))
    assert shows(shown.content) == ("interactive", "Pick one", "button", ())
    assert shown.plain() == "[interactive] Pick one"


def test_an_unreadable_record_shows_why_and_what_the_index_knows() -> None:
    shown = display(message(None, kind="echo", type="text", unreadable="not JSON", direction="outbound"))
    assert shows(shown.content) == ("unreadable", "", "not JSON", ("echo · text", "e" * 32))
    assert shown.plain() == f"[record {'e' * 32} (echo text) could not be read: not JSON]"
    assert (shown.history, shown.deletion, shown.quotes, shown.reacts_to) == ((), None, None, None)


def test_a_location_without_coordinates_shows_no_placeholder() -> None:
    shown = display(message({"type": "location", "location": {"name": "Shop"}}))
    assert shows(shown.content) == ("location", "", "Shop", ())


def test_a_group_message_says_so() -> None:
    assert display(message({"type": "text", "text": {"body": "hi"}, "group_id": "G1"})).in_group
    assert not display(message({"type": "text", "text": {"body": "hi"}})).in_group


# ------------------------------------------------------------------ any JSON a message may carry
TYPES = ["text", "image", "video", "audio", "document", "sticker", "location", "contacts", "interactive", "button",
         "order", "template", "reaction", "system", "edit", "unsupported"]  # fmt: skip
KEYS = ["type", "text", "body", "caption", "filename", "name", "address", "latitude", "longitude", "formatted_name",
        "phones", "phone", "wa_id", "button_reply", "list_reply", "title", "description", "product_items", "quantity",
        "product_retailer_id", "item_price", "currency", "components", "parameters", "emoji", "message", "message_id",
        "context", "id", "group_id", "recipient_type", "request", *TYPES]  # fmt: skip
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(
    scalars | st.sampled_from(TYPES),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def message_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A message object of a known or any type, its body (usually) under the type's key."""
    kind = draw(st.sampled_from(TYPES) | st.text(max_size=5))
    shaped = draw(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=4))
    return {"type": kind, kind: draw(json_values), **shaped} if draw(st.booleans()) else shaped


@st.composite
def messages(draw: st.DrawFn) -> ConversationMessage:
    payload: Any = draw(message_objects() | json_values)
    kind = draw(st.sampled_from(["message", "echo", "history", "outbound", "group", "status"]))
    if kind == "outbound" and draw(st.booleans()):
        payload = {"request": payload, "response": {}}
    # An edit's payload is usually shaped as Meta sends it (the new message under edit.message), else any JSON.
    new_messages = draw(st.lists(message_objects(), max_size=2))
    edits = [
        Change(f"{n:032x}", "edit", "customer", n, {"edit": {"message": new}} if n % 2 == 0 else new)
        for n, new in enumerate(new_messages)
    ]
    return message(
        payload,
        kind=kind,
        type=draw(st.none() | st.sampled_from(TYPES)),
        edits=edits,
        unreadable=draw(st.none() | st.text(max_size=8)),
    )


def renderings(value: Any) -> set[str]:
    """Every string a scalar of ``value`` renders as (dict keys are never shown)."""
    if isinstance(value, dict):
        return set().union(*map(renderings, value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*map(renderings, value)) if value else set()
    return {value if isinstance(value, str) else str(value)}


def types_as_text(value: Any) -> set[str]:
    """The ``type`` values of ``value``'s objects, as text."""
    if isinstance(value, dict):
        return {str(value.get("type"))}.union(*map(types_as_text, value.values()))
    if isinstance(value, list):
        return set().union(*map(types_as_text, value)) if value else set()
    return set()


SEPARATORS = set(", ·×—")  # what content_of puts between the input's values


def made_of(shown: str, pieces: set[str]) -> bool:
    """Whether ``shown`` is the input's pieces joined by separators only."""
    for piece in sorted(pieces, key=len, reverse=True):
        if piece:
            shown = shown.replace(piece, "\0")
    return set(shown) <= SEPARATORS | {"\0"}


@settings(max_examples=300, deadline=None)
@given(messages())
def test_display_never_raises_and_shows_only_what_the_message_holds(message: ConversationMessage) -> None:
    shown = display(message)
    shown.plain()
    pieces = renderings(message.payload) | {message.type or "", message.kind, message.event_id}
    pieces |= set().union(*(renderings(e.payload) for e in message.edits)) if message.edits else set()
    if message.unreadable is not None:
        pieces.add(message.unreadable)
    contents = [shown.content, *(revision.content for revision in shown.history)]
    for content in contents:
        # The type is the input's, as a string (a type that is not one shows as its text, as it always has).
        assert content.type in pieces | {"unknown", "unreadable", "edit"} | types_as_text(message.payload)
        for field in (content.text, content.label, *content.lines):
            assert made_of(field, pieces), field
    for reference in (shown.quotes, shown.reacts_to):
        assert reference is None or reference in pieces


@pytest.mark.parametrize(
    ("caption", "shown"),
    [
        ([], ""),
        ({}, ""),
        (["a", "b"], "a, b"),
        ({"x": "a", "y": [1, None, "b"]}, "a, 1, b"),
        (3, "3"),
        (None, ""),
    ],
)
def test_a_caption_that_is_not_text_shows_the_texts_it_holds_never_a_repr(caption: Any, shown: str) -> None:
    assert content_of({"type": "image", "image": {"caption": caption}}).text == shown


def test_a_deeply_nested_caption_does_not_raise() -> None:
    caption: Any = "deep"
    for _ in range(100_000):
        caption = [caption]
    assert content_of({"type": "image", "image": {"caption": caption}}).text == "deep"


@pytest.mark.parametrize("kind", [["odd"], [False, False], {"a": "b"}, []])
def test_a_type_that_is_a_list_or_an_object_names_no_type(kind: Any) -> None:
    assert content_of({"type": kind}).type == "unknown"
    assert content_of({"type": kind}, "text").type == "text"
