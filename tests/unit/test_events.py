"""Splitting Meta's webhooks into events: every sample payload, ids, envelopes, and arbitrary input."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.events import EnvelopeError, Event, WebhookRejected, parse_webhook
from services.ingest.replay import meta_encode
from tests.support import payloads_dir

pytestmark = pytest.mark.unit

# Events per kind for every sample payload (read off the files; a change here is a change of contract).
EXPECTED: dict[str, dict[str, int]] = {
    "account_update_partner_removed_coexistence_disconnection": {"account": 1},
    "account_update_violation": {"account": 1},
    "errors_value_level_rate_limit": {"error": 1},
    "history_chat_threads": {"history": 4},
    "history_media_asset": {"history": 1},
    "history_sharing_declined_error": {"error": 1},
    "inbound_interactive_with_value_errors_131000": {"message": 1, "error": 1},
    "message_template_status_update_approved": {"template": 1},
    "smb_app_state_sync_contact_add": {"unknown": 1},
    "smb_message_echoes_edit": {"echo": 1},
    "smb_message_echoes_revoke": {"echo": 1},
    "smb_message_echoes_text": {"echo": 1},
    "status_group_aggregated_multiple_statuses": {"status": 2},
    "synthetic_batch_two_contacts": {"message": 3},
    "synthetic_batch_two_entries": {"message": 1, "status": 1},
    "synthetic_unknown_field": {"unknown": 1},
    "synthetic_webhook_errors": {"error": 1},
}
FILES = sorted(payloads_dir().glob("*.json"))


def split(raw: bytes) -> list[Event]:
    return parse_webhook(raw, raw_sha256=hashlib.sha256(raw).hexdigest(), signature="sha256=x", received_at="t")


def expected_kinds(path: Path) -> dict[str, int]:
    if path.stem in EXPECTED:
        return EXPECTED[path.stem]
    if path.stem.startswith("inbound_"):
        return {"message": 1}
    if path.stem.startswith("status_") or path.stem == "synthetic_status_deleted":
        return {"status": 1}
    raise AssertionError(f"no expectation for {path.name}")


def items_of(body: Any) -> list[Any]:
    """Every message / status / echo object of a body, walked independently of the splitter."""
    found = []
    for entry in body["entry"]:
        for change in entry["changes"]:
            value = change["value"]
            for key in ("messages", "statuses", "message_echoes"):
                found.extend(value.get(key, []))
    return found


def test_the_sample_set_is_complete() -> None:
    assert len(FILES) >= 55, "../shared/whatsapp/payloads not found (set WA_PAYLOADS_DIR)"
    total = Counter(kind for path in FILES for kind in (e.kind for e in split(path.read_bytes())))
    assert total == Counter(message=34, status=13, error=4, history=5, unknown=2, echo=3, account=2, template=1)


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in FILES])
def test_every_sample_payload_splits_completely(path: Path) -> None:
    raw = path.read_bytes()
    events = split(raw)
    assert dict(Counter(e.kind for e in events)) == expected_kinds(path)
    payloads = [e.payload for e in events]
    for item in items_of(json.loads(raw)):
        assert item in payloads, "a message or status object was not kept verbatim"
    assert len({e.event_id for e in events}) == len(events)
    for event in events:
        assert event.delivery.sha256 == hashlib.sha256(raw).hexdigest()
        assert Event.from_json(event.to_json()) == event


@pytest.mark.parametrize(
    ("name", "original"),
    [
        pytest.param(
            "inbound_revoke_coexistence", "wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNCNjk5RDUwNUZGMUZEM0VBRAA=", id="revoke"
        ),
        pytest.param(
            "inbound_edit_coexistence", "wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNCNjk5RDUwNUZGMUZEM0VBRAA=", id="edit"
        ),
        pytest.param(
            "smb_message_echoes_revoke",
            "wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNCNjk5RDUwNUZGMUZEM0VBRAA=",
            id="echo revoke",
        ),
    ],
)
def test_deletions_and_edits_carry_the_original_message_id(name: str, original: str) -> None:
    (event,) = split((payloads_dir() / f"{name}.json").read_bytes())
    assert event.original_message_id == original


def test_a_deleted_status_points_at_the_message() -> None:
    (event,) = split((payloads_dir() / "synthetic_status_deleted.json").read_bytes())
    assert event.type == "deleted"
    assert event.original_message_id == event.message_id is not None


def test_two_contacts_each_get_their_own_subject_and_contact_entry() -> None:
    events = split((payloads_dir() / "synthetic_batch_two_contacts.json").read_bytes())
    for event in events:
        assert event.subject is not None
        assert event.contact is not None
        assert event.contact["wa_id"] == event.subject.wa_id
        assert event.key() == f"{event.phone_number_id}:{event.subject.wa_id}".encode()
    assert len({e.subject for e in events}) == 2


def test_username_only_person_is_keyed_by_user_id() -> None:
    (event,) = split((payloads_dir() / "inbound_text_bsuid_username_no_phone.json").read_bytes())
    assert event.subject is not None
    assert event.subject.wa_id is None
    assert event.subject.user_id
    assert event.key().endswith(event.subject.user_id.encode())


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in FILES[:20]])
def test_event_ids_survive_reserialisation(path: Path) -> None:
    raw = path.read_bytes()
    variants = [raw, meta_encode(raw), json.dumps(json.loads(raw), indent=3, ensure_ascii=False).encode()]
    ids = [[e.event_id for e in split(v)] for v in variants]
    assert ids[0] == ids[1] == ids[2]


def test_different_objects_never_share_an_id_even_with_a_reused_wamid() -> None:
    text = split((payloads_dir() / "inbound_text.json").read_bytes())[0]
    username = split((payloads_dir() / "inbound_text_bsuid_username_no_phone.json").read_bytes())[0]
    assert text.message_id == username.message_id
    assert text.event_id != username.event_id


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(b"not json", "body is not JSON", id="not json"),
        pytest.param(b"[]", "body must be a JSON object", id="a list"),
        pytest.param(
            b'{"object":"page","entry":[]}', "'object' must be 'whatsapp_business_account'", id="other object"
        ),
        pytest.param(b'{"object":"whatsapp_business_account"}', "'entry' must be a list", id="no entry"),
        pytest.param(
            b'{"object":"whatsapp_business_account","entry":[1]}', "each entry must be an object", id="entry not object"
        ),
        pytest.param(
            b'{"object":"whatsapp_business_account","entry":[{"changes":[]}]}',
            "an entry has no WABA 'id'",
            id="no waba",
        ),
        pytest.param(
            b'{"object":"whatsapp_business_account","entry":[{"id":"1"}]}',
            "an entry's 'changes' must be a list",
            id="no changes",
        ),
        pytest.param(
            b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"value":{}}]}]}',
            "a change has no 'field'",
            id="no field",
        ),
    ],
)
def test_envelope_errors_are_400_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(WebhookRejected) as rejected:
        split(body)
    assert (rejected.value.status, rejected.value.reason) == (400, reason)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"{}", id="empty object"),
        pytest.param(b'{"schema":2}', id="other schema"),
        pytest.param(b"\xff", id="not json"),
        pytest.param(b'{"schema":1,"event_id":"x","kind":"message"}', id="incomplete"),
    ],
)
def test_from_json_rejects_what_is_not_an_envelope(raw: bytes) -> None:
    with pytest.raises(EnvelopeError):
        Event.from_json(raw)


def rejection_status(raw: bytes) -> int | None:
    """None when the body splits; the status when it is rejected; any other exception propagates (a bug)."""
    try:
        split(raw)
    except WebhookRejected as rejected:
        return rejected.status
    return None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=30,
)
KEYS = st.sampled_from(["object", "entry", "id", "changes", "field", "value", "messages", "statuses", "metadata"])


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_arbitrary_json_raises_nothing_but_webhook_rejected(value: Any) -> None:
    assert rejection_status(json.dumps(value).encode()) in (None, 400)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FILES), KEYS, JSON)
def test_mutated_real_payloads_raise_nothing_but_webhook_rejected(path: Path, key: str, replacement: Any) -> None:
    body = json.loads(path.read_bytes())

    def mutate(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (replacement if k == key else mutate(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [mutate(v) for v in node]
        return node

    try:
        events = split(json.dumps(mutate(body)).encode())
    except WebhookRejected:
        return
    for event in events:
        assert Event.from_json(event.to_json()).event_id == event.event_id


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_nothing_but_webhook_rejected(raw: bytes) -> None:
    assert rejection_status(raw) in (None, 400)
