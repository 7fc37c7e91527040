"""The events topic's records: ingest's envelope check and key, and the archiver's split of a journaled POST."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import orjson
import pytest

from devtools.samples import payloads_dir
from services.archiver import sealing
from services.archiver.sealing import RawRecord, batch_object_key, decode_record
from services.core.container import SourceRange, object_key
from services.core.events import Event, WebhookRejected, decode_webhook, parse_webhook, webhook_scope
from services.core.journal import (
    EVENT_FORMAT,
    FORMAT_HEADER,
    RECEIVED_AT_HEADER,
    SIGNATURE_HEADER,
    WEBHOOK_FORMAT,
    event_record,
    split_record,
    webhook_record,
)

pytestmark = pytest.mark.unit

RECEIVED_AT = "2026-12-01T10:00:00.123Z"
SIGNATURE = "sha256=" + "ab" * 32


def change(field: str, value: Any) -> dict[str, Any]:
    return {"field": field, "value": value}


def body(*entries: Any) -> bytes:
    return orjson.dumps({"object": "whatsapp_business_account", "entry": list(entries)})


def number_change(number: str, *, text: str = "Bonjour") -> dict[str, Any]:
    return change(
        "messages",
        {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": number},
            "messages": [{"from": "16505551234", "id": f"wamid.{text}", "type": "text", "text": {"body": text}}],
        },
    )


def record_of(raw: bytes, offset: int = 5) -> RawRecord:
    out = webhook_record("t", webhook_scope(decode_webhook(raw))[0], raw, signature=SIGNATURE, received_at=RECEIVED_AT)
    return RawRecord(partition=2, offset=offset, timestamp_ms=1_000, key=out.key, value=out.value, headers=out.headers)


# ---------------------------------------------------------------- ingest's check and key
@pytest.mark.parametrize(
    ("raw", "key", "numbers"),
    [
        pytest.param(body({"id": "1022", "changes": [number_change("1065")]}), "1065", {"1065"}, id="one number"),
        pytest.param(
            body({"id": "1022", "changes": [number_change("1065"), number_change("1065", text="encore")]}),
            "1065",
            {"1065"},
            id="two changes of one number",
        ),
        pytest.param(
            body({"id": "1022", "changes": [number_change("1065")]}, {"id": 1023, "changes": [number_change("2")]}),
            "1022",
            {"1065", "2"},
            id="several numbers: the first WABA",
        ),
        pytest.param(
            body({"id": 1022, "changes": [change("account_update", {"event": "VERIFIED_ACCOUNT"})]}),
            "1022",
            set(),
            id="account level: the WABA",
        ),
        pytest.param(
            body(
                {"id": "1022", "changes": [number_change("1065"), change("account_update", {"event": "X"})]},
            ),
            "1065",
            {"1065"},
            id="a number and an account change: the number",
        ),
        pytest.param(body(), "", set(), id="no entry at all"),
    ],
)
def test_webhook_scope_keys_a_post_by_its_business_number(raw: bytes, key: str, numbers: set[str]) -> None:
    assert webhook_scope(decode_webhook(raw)) == (key, frozenset(numbers))


BAD_BODIES = [
    pytest.param(b"[]", id="not an object"),
    pytest.param(b'{"object": "page", "entry": []}', id="another object"),
    pytest.param(b'{"object": "whatsapp_business_account"}', id="no entry list"),
    pytest.param(body("x"), id="an entry that is not an object"),
    pytest.param(body({"changes": []}), id="an entry without id"),
    pytest.param(body({"id": True, "changes": []}), id="a boolean id"),
    pytest.param(body({"id": "1", "changes": {}}), id="changes not a list"),
    pytest.param(body({"id": "1", "changes": [{"value": {}}]}), id="a change without field"),
    pytest.param(body({"id": "1", "changes": [number_change("1"), 3]}), id="a later change not an object"),
]


@pytest.mark.parametrize("raw", BAD_BODIES)
def test_ingest_refuses_exactly_what_the_splitter_refuses(raw: bytes) -> None:
    """Ingest no longer splits, but a body it accepts must be one the archiver can split: same checks, same
    reason, so Meta hears 400 for the same bodies as before."""
    with pytest.raises(WebhookRejected) as split:
        parse_webhook(raw, raw_sha256="0" * 64, signature=None, received_at=RECEIVED_AT)
    with pytest.raises(WebhookRejected) as checked:
        webhook_scope(decode_webhook(raw))
    assert checked.value.reason == split.value.reason


# ---------------------------------------------------------------- the archiver's split
@pytest.mark.parametrize("sample", sorted(p.name for p in payloads_dir().glob("*.json")))
def test_a_journaled_post_splits_into_the_events_ingest_used_to_produce(sample: str) -> None:
    raw = (payloads_dir() / sample).read_bytes()
    expected = parse_webhook(
        raw, raw_sha256=hashlib.sha256(raw).hexdigest(), signature=SIGNATURE, received_at=RECEIVED_AT
    )
    decoded = decode_record(record_of(raw))
    assert [r.event for r in decoded] == expected
    assert [r.position for r in decoded] == list(range(len(expected)))
    assert all(r.offset == 5 and r.partition == 2 for r in decoded)
    # each event is sealed as its own envelope, the one that used to be the Kafka value
    assert [r.value for r in decoded] == [e.to_json() for e in expected]
    assert [r.key for r in decoded] == [e.key() for e in expected]
    assert all(dict(r.headers) == {FORMAT_HEADER: EVENT_FORMAT} for r in decoded)


def test_the_journal_record_is_the_exact_post_with_its_evidence() -> None:
    raw = (payloads_dir() / "inbound_text.json").read_bytes()
    out = webhook_record("t", "1065", raw, signature=SIGNATURE, received_at=RECEIVED_AT)
    assert out.value is raw
    assert out.key == b"1065"
    assert dict(out.headers) == {
        FORMAT_HEADER: WEBHOOK_FORMAT,
        RECEIVED_AT_HEADER: RECEIVED_AT.encode(),
        SIGNATURE_HEADER: SIGNATURE.encode(),
    }


def test_one_unstorable_event_of_a_post_is_a_dead_letter_alone() -> None:
    raw = body({"id": "1022", "changes": [number_change("1065"), number_change("10\x0065", text="deux")]})
    first, second = decode_record(record_of(raw))
    assert first.event is not None
    assert first.poison is None
    assert second.event is None
    assert second.poison == "unstorable phone_number_id: contains NUL"
    # the dead letter is the event's own envelope, not the whole POST (which holds other people's data)
    assert orjson.loads(second.value)["phone_number_id"] == "10\x0065"
    assert dict(second.headers) == {FORMAT_HEADER: EVENT_FORMAT}


@pytest.mark.parametrize(
    ("headers", "value", "fault"),
    [
        pytest.param(((FORMAT_HEADER, b"webhook/9"),), b"{}", "unknown record format", id="unknown format"),
        pytest.param(
            ((FORMAT_HEADER, WEBHOOK_FORMAT),),
            body(),
            "unsplittable webhook: wa-received-at header missing",
            id="no receipt time",
        ),
        pytest.param(
            ((FORMAT_HEADER, WEBHOOK_FORMAT), (RECEIVED_AT_HEADER, b"x")),
            b'{"object": "page"}',
            "unsplittable webhook: 'object' must be 'whatsapp_business_account'",
            id="not an envelope",
        ),
        pytest.param(
            ((FORMAT_HEADER, WEBHOOK_FORMAT), (RECEIVED_AT_HEADER, b"x")),
            b"[" * 100_000,
            "unsplittable webhook: body is nested too deeply",
            id="nested too deeply",
        ),
        pytest.param((), b"{", "not an event envelope: not JSON", id="no format: an envelope expected"),
        pytest.param(((FORMAT_HEADER, EVENT_FORMAT),), None, "empty record", id="tombstone"),
    ],
)
def test_a_record_that_cannot_be_split_is_one_dead_letter_as_consumed(
    headers: tuple[tuple[str, bytes], ...], value: bytes | None, fault: str
) -> None:
    assert split_record(value, headers).fault == fault
    (dead,) = decode_record(RawRecord(partition=0, offset=9, timestamp_ms=0, key=b"key", value=value, headers=headers))
    assert (dead.event, dead.poison) == (None, fault)
    assert (dead.key, dead.value, dead.headers) == (b"key", value or b"", headers)


def test_envelope_records_of_before_the_journal_still_decode() -> None:
    raw = (payloads_dir() / "inbound_text.json").read_bytes()
    (event,) = parse_webhook(raw, raw_sha256="0" * 64, signature=None, received_at=RECEIVED_AT)
    legacy = RawRecord(partition=0, offset=1, timestamp_ms=0, key=event.key(), value=event.to_json())
    tagged = event_record("t", event)
    assert [r.event for r in decode_record(legacy)] == [event]
    assert [
        r.event
        for r in decode_record(
            RawRecord(partition=0, offset=1, timestamp_ms=0, key=tagged.key, value=tagged.value, headers=tagged.headers)
        )
    ] == [event]


def test_a_post_without_events_decodes_to_nothing() -> None:
    assert decode_record(record_of(body())) == []


def test_a_batch_starting_inside_a_post_has_a_key_of_its_own() -> None:
    source = SourceRange("t", 2, 5, 9)
    assert batch_object_key("p", source, 0) == object_key("p", source)
    assert batch_object_key("p", source, 3) == "p/t/00002/00000000000000000005-00003.waarc"


def test_an_event_nested_as_deep_as_ingest_accepts_is_encoded_again() -> None:
    """orjson writes 255 levels at most and the standard library recurses once per level: the envelope of a message
    nested 1,010 levels deep (ingest accepts 1,024) is encoded under the split's recursion limit, not refused."""
    message = {"from": "16505551234", "id": "wamid.deep", "type": "text", "text": {"body": "x"}, "x": "DEEP"}
    document = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1022",
                "changes": [change("messages", {"metadata": {"phone_number_id": "1065"}, "messages": [message]})],
            }
        ],
    }
    raw = json.dumps(document).encode().replace(b'"DEEP"', b'{"n":' * 1010 + b'"bottom"' + b"}" * 1010)
    (decoded,) = decode_record(record_of(raw))
    assert decoded.poison is None
    assert decoded.event is not None
    assert decoded.event.message_id == "wamid.deep"


def test_a_split_that_fails_unforeseen_is_one_dead_letter_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_value: bytes | None, _headers: Any) -> Any:
        raise KeyError("a bug in the splitter")

    monkeypatch.setattr(sealing, "split_record", broken)
    raw = record_of(body({"id": "1022", "changes": [number_change("1065")]}))
    (dead,) = decode_record(raw)
    assert dead.event is None
    assert dead.poison == "unsplittable record: KeyError"
    assert (dead.value, dead.headers) == (raw.value, raw.headers), "carried as consumed"


def test_an_event_that_cannot_be_encoded_again_is_a_dead_letter_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Event.to_json

    def to_json(self: Event) -> bytes:
        if self.message_id == "wamid.deux":
            raise RecursionError("maximum recursion depth exceeded")
        return real(self)

    monkeypatch.setattr(Event, "to_json", to_json)
    raw = body({"id": "1022", "changes": [number_change("1065"), number_change("1065", text="deux")]})
    first, second = decode_record(record_of(raw))
    assert first.event is not None
    assert second.event is None
    assert second.poison == "unencodable event: RecursionError (position 1)"
