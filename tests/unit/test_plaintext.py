"""Reading archived plaintext: whatever JSON the archive accepted decodes, lone surrogates included, into values every
output can write; what still cannot be read is a typed result with a reason, and a timeline item of its own."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from rich.console import Console

from services.cli.render import group_change, messages_table
from services.console.i18n import install_translations, translator
from services.console.timeline import bubbles
from services.core.events import parse_webhook
from services.core.journal import SPLIT_RECURSION_LIMIT
from services.core.plaintext import (
    RECURSION_LIMIT,
    REPLACEMENT,
    DecodedRecord,
    UndecodableRecord,
    decode_record,
    display_safe,
    json_bytes,
    read_envelope,
)
from services.core.reader import RecordLocation
from services.core.vocabulary import EventKind
from services.review.assembly import assemble, unreadable_record
from services.review.display import display
from services.review.export import export_document, render_html, write_export
from services.review.queries import IndexedRecord

pytestmark = pytest.mark.unit

HALF_EMOJI = "\ud83d"  # the high half of 😀 (U+1F600), as a sender's client may cut it
TEMPLATES = Path(__file__).parents[2] / "services" / "console" / "templates"


def ascii_json(value: Any) -> bytes:
    """JSON as the archiver writes a value holding a lone surrogate: every non-ASCII character escaped."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("plaintext", "value", "replaced"),
    [
        pytest.param(b'{"a":"b","n":[1,2.5,null,true]}', {"a": "b", "n": [1, 2.5, None, True]}, 0, id="orjson's path"),
        pytest.param('{"t":"é😀"}'.encode(), {"t": "é😀"}, 0, id="UTF-8 and a paired emoji"),
        pytest.param(b'{"t":"\\ud83d\\ude00"}', {"t": "😀"}, 0, id="an escaped surrogate pair is one character"),
        pytest.param(b'{"t":"hi \\ud83d"}', {"t": f"hi {REPLACEMENT}"}, 1, id="a lone high surrogate in a text"),
        pytest.param(b'{"t":"\\ude00!"}', {"t": f"{REPLACEMENT}!"}, 1, id="a lone low surrogate"),
        pytest.param(b'{"k\\ud83d":1}', {f"k{REPLACEMENT}": 1}, 1, id="in a key"),
        pytest.param(b'[["\\ud800",{"x":"\\udfff\\ud800"}],"ok"]', [[REPLACEMENT, {"x": REPLACEMENT * 2}], "ok"], 3,
                     id="deep in lists and objects"),
        pytest.param(b'{"n":123456789012345678901234567890}', {"n": 123456789012345678901234567890}, 0,
                     id="an integer beyond 64 bits stays exact"),
        pytest.param(b'{"n":12345678901234567890123,"t":"\\ud83d"}', {"n": 12345678901234567890123, "t": REPLACEMENT},
                     1, id="both"),
        pytest.param(b'[9223372036854775807,18446744073709551615,18446744073709551616,-9223372036854775809]',
                     [2**63 - 1, 2**64 - 1, 2**64, -(2**63) - 1], 0, id="around the 64-bit bounds"),
        pytest.param(b'{"id":"12345678901234567890123","x":0.12345678901234567890}',
                     {"id": "12345678901234567890123", "x": 0.12345678901234567890}, 0,
                     id="long digit runs that are no integer"),
        pytest.param(b'{"x":1e19,"y":12345678901234567890e0}', {"x": 1e19, "y": 12345678901234567890e0}, 0,
                     id="large floats stay floats"),
    ],
)  # fmt: skip
def test_archived_json_decodes(plaintext: bytes, value: Any, replaced: int) -> None:
    decoded = decode_record(plaintext)
    assert decoded == DecodedRecord(value, replaced)
    assert json.loads(json_bytes(decoded.value)) == value  # writable by every output, and reads back the same


@pytest.mark.parametrize(
    ("plaintext", "reason"),
    [
        pytest.param(b"not json", "not JSON", id="text"),
        pytest.param(b"", "not JSON", id="empty"),
        pytest.param(b'{"a":1', "not JSON", id="cut short"),
        pytest.param(b'{"t":"\xff\xfe"}', "not UTF-8 text", id="bytes that are not UTF-8"),
        pytest.param(b"[NaN]", "not JSON", id="NaN"),
        pytest.param(b"[-Infinity]", "not JSON", id="Infinity"),
        pytest.param(b"[1e400]", "not JSON", id="beyond the double range"),
        pytest.param(b"[" * (RECURSION_LIMIT + 10) + b"]" * (RECURSION_LIMIT + 10), "nested too deeply", id="too deep"),
    ],
)
def test_what_cannot_be_read_says_why_and_quotes_nothing(plaintext: bytes, reason: str) -> None:
    assert decode_record(plaintext) == UndecodableRecord(reason)


def test_nesting_past_orjsons_limit_decodes_and_writes_out() -> None:
    depth = 2_000  # orjson reads 1,024 levels and writes 255; the archiver wrote this under its recursion limit
    plaintext = b'{"a":' * depth + b'"\\ud83d"' + b"}" * depth
    decoded = decode_record(plaintext)
    assert isinstance(decoded, DecodedRecord)
    assert decoded.replaced == 1
    assert json_bytes(decoded.value) == b'{"a":' * depth + f'"{REPLACEMENT}"'.encode() + b"}" * depth


def test_the_recursion_limit_is_the_archivers() -> None:
    assert RECURSION_LIMIT == SPLIT_RECURSION_LIMIT


def test_a_repaired_key_never_hides_another_member() -> None:
    decoded = decode_record(b'{"a\\ud800":1,"a\\ufffd":2,"a\\udc00":3,"b":4}')
    assert decoded == DecodedRecord({"a\ufffd\ufffd": 1, "a\ufffd": 2, "a\ufffd\ufffd\ufffd": 3, "b": 4}, 2)


def test_values_without_a_surrogate_are_not_copied() -> None:
    value = {"a": [{"b": "c"}], "d": {"e": 1}}
    assert display_safe(value)[0] is value
    repaired, count = display_safe({"keep": value["d"], "fix": "\udc00"})
    assert count == 1
    assert repaired["keep"] is value["d"]


@pytest.mark.parametrize(
    ("plaintext", "reason"),
    [
        pytest.param(b"[1]", "not a JSON object", id="a list"),
        pytest.param(b'"x"', "not a JSON object", id="a string"),
        pytest.param(b'{"kind":"message"}', "'event_id' is not a string", id="no event id"),
        pytest.param(b'{"event_id":"e","kind":7}', "'kind' is not a string", id="kind"),
        pytest.param(b'{"event_id":"e","kind":"message","timestamp":"1"}', "'timestamp' is not an integer", id="time"),
        pytest.param(b'{"event_id":"e","kind":"message","timestamp":true}', "'timestamp' is not an integer", id="bool"),
        pytest.param(b'{"event_id":"e","kind":"message","message_id":1}', "'message_id' is not a string", id="id"),
        pytest.param(b'{"event_id":"e","kind":"message","subject":"x"}', "'subject' is not an object", id="subject"),
    ],
)
def test_an_envelope_the_views_cannot_place_is_unreadable(plaintext: bytes, reason: str) -> None:
    assert read_envelope(plaintext) == UndecodableRecord(f"not an event envelope: {reason}")
    assert read_envelope(b"{") == UndecodableRecord("not JSON")


def test_json_bytes_is_orjsons_output_where_orjson_can_write() -> None:
    value = {"a": [1, 2.5, None, "é"], "b": {"c": True}}
    assert json_bytes(value) == orjson.dumps(value)
    assert json_bytes(value, indent=True) == orjson.dumps(value, option=orjson.OPT_INDENT_2)
    assert json_bytes({"n": 2**70}) == b'{"n":1180591620717411303424}'
    assert json_bytes({"n": 2**70}, indent=True) == b'{\n  "n": 1180591620717411303424\n}'
    when = datetime(2026, 1, 2, tzinfo=UTC)
    assert (
        json_bytes({"n": 2**70, "at": when}, default=str)
        == b'{"n":1180591620717411303424,"at":"2026-01-02 00:00:00+00:00"}'
    )


# ------------------------------------------------------------------ properties: any JSON, lone surrogates anywhere
def surrogate_heavy_text() -> st.SearchStrategy[str]:
    """Strings mixing any character with lone surrogates (hypothesis leaves surrogates out of text by default)."""
    pieces = st.one_of(st.characters(codec="utf-8"), st.integers(0xD800, 0xDFFF).map(chr))
    return st.lists(pieces, max_size=8).map("".join)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | surrogate_heavy_text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(surrogate_heavy_text(), inner, max_size=4),
    max_leaves=20,
)


def as_archived(value: Any) -> Any:
    """What the archived JSON of ``value`` holds: a high surrogate followed by a low one is the character they
    encode together (JSON's escaped pairs); the others are lone."""
    return json.loads(ascii_json(value))


def surrogates_in(value: Any) -> int:
    if isinstance(value, str):
        return sum(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return sum(surrogates_in(v) for v in value)
    if isinstance(value, dict):
        return sum(surrogates_in(k) + surrogates_in(v) for k, v in value.items())
    return 0


def same_shape(original: Any, shown: Any) -> bool:
    """Equal, except that strings (and keys) may differ where a surrogate was; no member is lost."""
    if isinstance(original, str):
        return (
            isinstance(shown, str)
            and len(shown) == len(original)
            and surrogates_in(original) == shown.count(REPLACEMENT) - original.count(REPLACEMENT)
        )
    if isinstance(original, list):
        return isinstance(shown, list) and len(shown) == len(original) and all(map(same_shape, original, shown))
    if isinstance(original, dict):
        if not isinstance(shown, dict) or len(shown) != len(original):
            return False
        return all(same_shape(v, w) for v, w in zip(original.values(), shown.values(), strict=True))
    return bool(shown == original)


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_any_archived_json_decodes_and_writes_out(value: Any, ascii_only: bool) -> None:
    # The archiver writes ASCII escapes when a value holds a lone surrogate; an event/1 record may come either way.
    plaintext = (
        ascii_json(value) if ascii_only else json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    )
    decoded = decode_record(plaintext)
    if not ascii_only and surrogates_in(value):
        # Raw surrogate bytes are not UTF-8: no JSON writer produces them, and the archive refused them.
        assert decoded == UndecodableRecord("not UTF-8 text")
        return
    archived = as_archived(value)
    assert isinstance(decoded, DecodedRecord)
    assert decoded.replaced == surrogates_in(archived)
    if decoded.replaced == 0:
        assert decoded.value == archived
    assert same_shape(archived, decoded.value)
    written = json_bytes(decoded.value)
    written.decode("utf-8")  # valid UTF-8: HTTP, Jinja and the terminal can carry it
    assert json.loads(written) == decoded.value
    assert json.loads(json_bytes(decoded.value, indent=True)) == decoded.value


@settings(max_examples=150, deadline=None)
@given(surrogate_heavy_text(), surrogate_heavy_text(), json_values)
def test_any_text_in_a_message_renders_everywhere(name: str, body: str, extra: Any) -> None:
    """A webhook with lone surrogates in the profile name, the text and anywhere else, split as the archiver does,
    sealed as it writes it, then read and rendered by every view."""
    raw = ascii_json(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "1",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {"display_phone_number": "15550001111", "phone_number_id": "2"},
                                "contacts": [{"profile": {"name": name}, "wa_id": "33"}],
                                "messages": [
                                    {
                                        "from": "33",
                                        "id": "wamid.1",
                                        "timestamp": "1760000000",
                                        "type": "text",
                                        "text": {"body": body},
                                        "extra": extra,
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    )
    (event,) = parse_webhook(raw, raw_sha256="0" * 64, signature=None, received_at="2026-01-01T00:00:00.000Z")
    decoded = read_envelope(event.to_json())
    assert isinstance(decoded, DecodedRecord)
    assert decoded.replaced == surrogates_in(as_archived([name, body, extra]))
    messages = assemble([decoded.value])
    rendered_everywhere(messages)
    (message,) = messages
    assert len(message.payload["text"]["body"]) == len(as_archived(body))


def rendered_everywhere(messages: Any) -> str:
    """Every view of ``messages``, encoded as it leaves the process (UTF-8); returns the console's HTML."""
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    install_translations(env)
    macro = env.from_string('{% from "_content.html" import content_of with context %}{{ content_of(c) }}')
    page = "".join(macro.render(c=bubble.content, t=translator("fr")) for bubble in bubbles(messages))
    page.encode()
    render_html(messages, title="export").encode()
    json_bytes(export_document(messages, request_ref=None, generated_at=datetime(2026, 1, 1, tzinfo=UTC)))
    for message in messages:
        json_bytes(message.to_json()).decode()
        display(message).plain().encode()
        group_change(message)
    out = io.StringIO()
    Console(file=out, width=200).print(messages_table(messages))
    out.getvalue().encode()
    return page


# ------------------------------------------------------------------ a record that cannot be read, among others
def indexed(n: int, kind: EventKind, kind_type: str | None, at: int) -> IndexedRecord:
    return IndexedRecord(
        location=RecordLocation(f"{n:032x}", "obj", n),
        subject_ref="a" * 64,
        kind=kind,
        type=kind_type,
        event_time=datetime.fromtimestamp(at, UTC),
        received_at=datetime.fromtimestamp(at + 1, UTC),
    )


def text_envelope(n: int, body: str, at: int) -> dict[str, Any]:
    payload = {"from": "33", "id": f"wamid.{n}", "timestamp": str(at), "type": "text", "text": {"body": body}}
    return {
        "event_id": f"{n:032x}",
        "kind": "message",
        "type": "text",
        "message_id": f"wamid.{n}",
        "timestamp": at,
        "received_at": "2026-01-01T00:00:00Z",
        "payload": payload,
    }


def test_an_unreadable_record_takes_its_place_with_its_metadata(tmp_path: Path) -> None:
    t = 1_760_000_000
    broken = unreadable_record(indexed(2, "message", "text", t + 60), "not JSON")
    messages = assemble([text_envelope(1, "before", t), text_envelope(3, "after", t + 120)], None, [broken])
    assert [m.event_id for m in messages] == [f"{n:032x}" for n in (1, 2, 3)]
    assert [display(m).plain() for m in messages] == [
        "before",
        f"[record {2:032x} (message text) could not be read: not JSON]",
        "after",
    ]
    shown = messages[1].to_json()
    assert shown["unreadable"] == "not JSON"
    assert (shown["kind"], shown["type"], shown["timestamp"], shown["payload"]) == ("message", "text", t + 60, None)
    assert shown["received_at"] == datetime.fromtimestamp(t + 61, UTC).isoformat()
    assert messages[0].to_json()["unreadable"] is None

    page = rendered_everywhere(messages)
    assert "Cet enregistrement n&#39;a pas pu être lu (not JSON)." in page
    assert f"{2:032x}" in page
    assert "before" in page
    assert "after" in page
    (bubble,) = [b for b in bubbles(messages) if b.content.type == "unreadable"]
    assert (bubble.sent_at, bubble.direction, bubble.kind) == (t + 60, "inbound", "message")

    (path,) = write_export(messages, tmp_path, formats=["json"], request_ref="R-1")
    exported = orjson.loads(path.read_bytes())
    assert exported["message_count"] == 3
    assert [m["unreadable"] for m in exported["messages"]] == [None, "not JSON", None]


def test_an_unreadable_record_without_meta_time_is_placed_by_its_receipt() -> None:
    record = IndexedRecord(
        location=RecordLocation("e" * 32, "obj", 0),
        subject_ref="a" * 64,
        kind="outbound",
        type=None,
        event_time=None,
        received_at=datetime(2026, 1, 2, tzinfo=UTC),
    )
    message = unreadable_record(record, "nested too deeply")
    assert (message.timestamp, message.direction) == (int(datetime(2026, 1, 2, tzinfo=UTC).timestamp()), "outbound")
    assert display(message).plain() == f"[record {'e' * 32} (outbound) could not be read: nested too deeply]"
    assert group_change(message) == ("?", display(message).plain())
