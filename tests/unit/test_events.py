"""Splitting Meta's webhooks into events: every sample payload, subjects, ids, envelopes, and arbitrary input."""

from __future__ import annotations

import copy
import hashlib
import json
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.samples import payloads_dir
from services.core.events import (
    Delivery,
    EnvelopeError,
    Event,
    Subject,
    WebhookRejected,
    canonical_hash,
    parse_webhook,
    split_webhook,
)
from tests.helpers.support import json_slots

pytestmark = pytest.mark.unit


FILES = sorted(payloads_dir().glob("*.json"))
RECEIVED_AT = "2026-11-25T10:00:00.000Z"
WABA = "102290129340398"
PHONE_NUMBER_ID = "106540352242922"
# Meta's documentation reuses this wamid as the target of every revoke and edit sample.
EDITED_WAMID = "wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNCNjk5RDUwNUZGMUZEM0VBRAA="

# Events per kind for every sample payload, counted by reading the files. A change here is a change of contract.
EXPECTED_KINDS: dict[str, dict[str, int]] = {
    "account_update_partner_removed_coexistence_disconnection": {"account": 1},
    "account_update_violation": {"account": 1},
    "calls_connect_business_initiated": {"call": 1},
    "calls_connect_user_initiated": {"call": 1},
    "calls_connect_user_initiated_bsuid_no_phone": {"call": 1},
    "calls_status_ringing_business_initiated": {"status": 1},  # a call status: `statuses` in the `calls` field
    "calls_terminate_business_initiated": {"call": 1},
    "calls_terminate_user_initiated": {"call": 1},
    "errors_value_level_rate_limit": {"error": 1},
    "group_lifecycle_update_create": {"group": 1},
    "group_participants_update_add": {"group_participant": 1},
    "group_participants_update_leave": {"group_participant": 1},
    "group_participants_update_remove": {"group_participant": 2},  # one record per participant removed
    "group_settings_update": {"group": 1},
    "group_status_update_suspended": {"group": 1},
    "history_chat_threads": {"history": 4},  # two threads: 3 + 1 messages
    "history_media_asset": {"history": 1},  # field `history`, but a plain `messages` list
    "history_sharing_declined_error": {"error": 1},  # a history item with `errors` and no threads
    "inbound_audio": {"message": 1},
    "inbound_button_quick_reply_pywa": {"message": 1},
    "inbound_button_template_quick_reply": {"message": 1},
    "inbound_contacts": {"message": 1},
    "inbound_document": {"message": 1},
    "inbound_edit_coexistence": {"message": 1},
    "inbound_group_text": {"message": 1},
    "inbound_image": {"message": 1},
    "inbound_interactive_button_reply": {"message": 1},
    "inbound_interactive_list_reply": {"message": 1},
    "inbound_interactive_nfm_reply_flow": {"message": 1},
    "inbound_interactive_with_value_errors_131000": {"message": 1, "error": 1},
    "inbound_location": {"message": 1},
    "inbound_order": {"message": 1},
    "inbound_reaction": {"message": 1},
    "inbound_reaction_removed": {"message": 1},
    "inbound_reaction_removed_empty_emoji": {"message": 1},
    "inbound_revoke_coexistence": {"message": 1},
    "inbound_sticker": {"message": 1},
    "inbound_system_customer_identity_changed": {"message": 1},
    "inbound_system_user_changed_number": {"message": 1},
    "inbound_text": {"message": 1},
    "inbound_text_bsuid_username_no_phone": {"message": 1},
    "inbound_text_ctwa_referral": {"message": 1},
    "inbound_text_forwarded": {"message": 1},
    "inbound_text_frequently_forwarded": {"message": 1},
    "inbound_text_message_business_button_referred_product": {"message": 1},
    "inbound_text_reply_context": {"message": 1},
    "inbound_unsupported_edit_131051": {"message": 1},
    "inbound_unsupported_no_subtype_131051": {"message": 1},
    "inbound_video": {"message": 1},
    "message_template_status_update_approved": {"template": 1},
    "smb_app_state_sync_contact_add": {"contact_sync": 1},
    "smb_app_state_sync_contact_bsuid_no_phone": {"contact_sync": 1},
    "smb_app_state_sync_contact_remove": {"contact_sync": 1},
    "smb_message_echoes_edit": {"echo": 1},
    "smb_message_echoes_revoke": {"echo": 1},
    "smb_message_echoes_text": {"echo": 1},
    "status_delivered": {"status": 1},
    "status_delivered_bsuid_username_no_phone": {"status": 1},
    "status_failed": {"status": 1},
    "status_failed_130472": {"status": 1},
    "status_group_aggregated_multiple_statuses": {"status": 2},
    "status_minimal_v24": {"status": 1},
    "status_played": {"status": 1},
    "status_read_group": {"status": 1},
    "status_sent": {"status": 1},
    "status_sent_biz_opaque_callback_data": {"status": 1},
    "synthetic_batch_two_contacts": {"message": 3},
    "synthetic_batch_two_entries": {"message": 1, "status": 1},
    "synthetic_status_deleted": {"status": 1},
    "synthetic_unknown_field": {"unknown": 1},
    "synthetic_webhook_errors": {"error": 1},
    "user_preferences_resume": {"preference": 1},
    "user_preferences_stop": {"preference": 1},
    "user_preferences_stop_bsuid_username": {"preference": 1},
}


@cache
def sample(name: str) -> bytes:
    return (payloads_dir() / f"{name}.json").read_bytes()


def split(raw: bytes, received_at: str = RECEIVED_AT) -> list[Event]:
    return parse_webhook(
        raw, raw_sha256=hashlib.sha256(raw).hexdigest(), signature="sha256=" + "0" * 64, received_at=received_at
    )


def meta_encode(raw: bytes) -> bytes:
    """The body as Meta's senders write it: compact, ASCII only (``\\uXXXX``), ``/`` escaped as ``\\/``."""
    return json.dumps(json.loads(raw), ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode("ascii")


def envelope(*changes: dict[str, Any], waba_id: Any = WABA) -> bytes:
    """A webhook body with one entry holding the given changes."""
    body = {"object": "whatsapp_business_account", "entry": [{"id": waba_id, "changes": list(changes)}]}
    return json.dumps(body).encode()


def messages_change(**value: Any) -> dict[str, Any]:
    metadata = {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID}
    return {"field": "messages", "value": {"messaging_product": "whatsapp", "metadata": metadata, **value}}


def contact_name_of(event: Event) -> str | None:
    """The profile name of the event's contact entry, if it has one."""
    if event.contact is None:
        return None
    name: str = event.contact["profile"]["name"]
    return name


def meta_items(body: Any) -> Iterator[Any]:
    """Every message, status, echo, error and history message of a body, walked independently of the splitter."""
    for entry in body["entry"]:
        for change in entry["changes"]:
            value = change["value"]
            for key in ("messages", "statuses", "message_echoes", "errors", "calls", "user_preferences", "state_sync"):
                yield from value.get(key, [])
            for chunk in value.get("history", []):
                for thread in chunk.get("threads", []):
                    yield from thread.get("messages", [])


# --- the sample payloads -------------------------------------------------------------------------------------


def test_the_expectation_table_covers_every_sample_payload() -> None:
    assert FILES, f"no sample payloads in {payloads_dir()} (set WA_PAYLOADS_DIR)"
    assert {path.stem for path in FILES} == set(EXPECTED_KINDS), "a sample was added or removed: update the table"
    total = Counter(event.kind for path in FILES for event in split(path.read_bytes()))
    assert total == Counter(
        message=35,
        status=14,
        history=5,
        call=5,
        error=4,
        echo=3,
        preference=3,
        contact_sync=3,
        group_participant=4,
        group=3,
        account=2,
        unknown=1,
        template=1,
    )


@pytest.mark.parametrize("path", [pytest.param(path, id=path.stem) for path in FILES])
def test_every_sample_splits_into_the_expected_events(path: Path) -> None:
    raw = path.read_bytes()
    events = split(raw)
    assert dict(Counter(event.kind for event in events)) == EXPECTED_KINDS[path.stem]
    entry_ids = {str(entry["id"]) for entry in json.loads(raw)["entry"]}
    for event in events:
        assert event.waba_id in entry_ids
        assert event.received_at == RECEIVED_AT
        assert event.delivery == Delivery(sha256=hashlib.sha256(raw).hexdigest(), signature="sha256=" + "0" * 64)
        assert len(event.event_id) == 32
        assert set(event.event_id) <= set("0123456789abcdef")
    assert len({event.event_id for event in events}) == len(events), "event ids must be unique within a payload"


@pytest.mark.parametrize("path", [pytest.param(path, id=path.stem) for path in FILES])
def test_every_meta_object_is_some_event_payload_verbatim(path: Path) -> None:
    body = json.loads(path.read_bytes())
    events = split_webhook(body, raw_sha256="0" * 64, signature=None, received_at=RECEIVED_AT)
    payloads = [event.payload for event in events]
    for item in meta_items(body):
        # The very object the decoder produced: nothing copied, nothing rewritten.
        assert any(payload is item for payload in payloads)
    assert json.loads(path.read_bytes()) == body, "splitting must not modify the body"


def test_no_two_sample_events_share_an_id_even_where_meta_reuses_a_wamid() -> None:
    events = [event for path in FILES for event in split(path.read_bytes())]
    assert len({event.event_id for event in events}) == len(events)
    # Meta's documentation samples give these two different messages (different senders) the same wamid.
    (text,) = split(sample("inbound_text"))
    (username,) = split(sample("inbound_text_bsuid_username_no_phone"))
    assert text.message_id == username.message_id
    assert text.event_id != username.event_id


@pytest.mark.parametrize(
    ("name", "message_type", "original"),
    [
        pytest.param("inbound_revoke_coexistence", "revoke", EDITED_WAMID, id="inbound revoke"),
        pytest.param("inbound_edit_coexistence", "edit", EDITED_WAMID, id="inbound edit"),
        pytest.param("smb_message_echoes_revoke", "revoke", EDITED_WAMID, id="echoed revoke"),
        pytest.param("smb_message_echoes_edit", "edit", EDITED_WAMID, id="echoed edit"),
        pytest.param("inbound_unsupported_edit_131051", "unsupported", None, id="cloud api edit has no link"),
        pytest.param("inbound_text", "text", None, id="plain text"),
    ],
)
def test_revokes_and_edits_carry_the_original_message_id(name: str, message_type: str, original: str | None) -> None:
    (event,) = split(sample(name))
    assert (event.type, event.original_message_id) == (message_type, original)
    assert event.message_id is not None
    assert event.message_id != event.original_message_id


def test_a_deleted_status_points_at_the_deleted_message() -> None:
    (event,) = split(sample("synthetic_status_deleted"))
    assert (event.kind, event.type) == ("status", "deleted")
    assert event.message_id == event.original_message_id == "wamid.HBgLT3R0KI9U82609KZYM5RXJQRLFXVJQQQWYR3AJIQO"
    (sent,) = split(sample("status_sent"))
    assert sent.original_message_id is None


@pytest.mark.parametrize(
    ("name", "index", "subject", "contact_name", "key"),
    [
        pytest.param(
            "inbound_text",
            0,
            Subject("16505551234", None),
            "Sheena Nelson",
            f"{PHONE_NUMBER_ID}:16505551234",
            id="message from a phone",
        ),
        pytest.param(
            "inbound_text_bsuid_username_no_phone",
            0,
            Subject(None, "user.93737..."),
            "Sheena Nelson",
            f"{PHONE_NUMBER_ID}:user.93737...",
            id="message from a username (empty wa_id)",
        ),
        pytest.param(
            "status_delivered_bsuid_username_no_phone",
            0,
            Subject(None, "user.9373795779eb6441c8adb2eaee5b848e7dd174ddd302d7db62142f4722d574b6"),
            "Pablo M.",
            f"{PHONE_NUMBER_ID}:user.9373795779eb6441c8adb2eaee5b848e7dd174ddd302d7db62142f4722d574b6",
            id="status to a username, contact matched by user_id",
        ),
        pytest.param(
            "status_sent",
            0,
            Subject("16505551234", None),
            None,
            f"{PHONE_NUMBER_ID}:16505551234",
            id="status without contacts",
        ),
        pytest.param(
            "status_played",
            0,
            Subject("972987654321", None),
            "Test Name",
            "1122334455667:972987654321",
            id="status with contacts",
        ),
        pytest.param(
            "smb_message_echoes_text",
            0,
            Subject("16505551234", None),
            None,
            f"{PHONE_NUMBER_ID}:16505551234",
            id="echo: the recipient, not the business",
        ),
        pytest.param(
            "history_chat_threads",
            0,
            Subject("16505551234", None),
            None,
            f"{PHONE_NUMBER_ID}:16505551234",
            id="history message sent by the business: the thread",
        ),
        pytest.param(
            "history_chat_threads",
            3,
            Subject("12125557890", None),
            None,
            f"{PHONE_NUMBER_ID}:12125557890",
            id="history second thread",
        ),
        pytest.param(
            "history_media_asset",
            0,
            Subject("16505551234", None),
            None,
            f"{PHONE_NUMBER_ID}:16505551234",
            id="history media asset",
        ),
        pytest.param(
            "inbound_system_user_changed_number",
            0,
            Subject("16505551234", None),
            None,
            f"{PHONE_NUMBER_ID}:16505551234",
            id="system message without contacts",
        ),
        pytest.param(
            "status_group_aggregated_multiple_statuses",
            1,
            Subject("16505551234", None),
            None,
            f"{PHONE_NUMBER_ID}:16505551234",
            id="group status: the participant, not the group",
        ),
        pytest.param("errors_value_level_rate_limit", 0, None, None, f"{PHONE_NUMBER_ID}:", id="value-level error"),
        pytest.param("account_update_violation", 0, None, None, f"{WABA}:", id="account update: keyed by the WABA"),
    ],
)
def test_subject_contact_and_kafka_key(
    name: str, index: int, subject: Subject | None, contact_name: str | None, key: str
) -> None:
    event = split(sample(name))[index]
    assert event.subject == subject
    assert contact_name_of(event) == contact_name
    assert event.key() == key.encode()


def test_two_people_in_one_post_each_get_their_own_subject_and_contact() -> None:
    events = split(sample("synthetic_batch_two_contacts"))
    people = [(event.subject, contact_name_of(event)) for event in events]
    assert people == [
        (Subject("33612345678", None), "Camille Martin"),
        (Subject("33698765432", None), "Lucas Bernard"),
        (Subject("33612345678", None), "Camille Martin"),
    ]
    assert [event.key() for event in events] == [
        f"{PHONE_NUMBER_ID}:33612345678".encode(),
        f"{PHONE_NUMBER_ID}:33698765432".encode(),
        f"{PHONE_NUMBER_ID}:33612345678".encode(),
    ]
    assert [event.timestamp for event in events] == [1764001086, 1764001007, 1764001629]


def test_every_entry_of_a_batch_is_split_with_its_own_waba() -> None:
    message, status = split(sample("synthetic_batch_two_entries"))
    assert (message.kind, message.waba_id, message.type) == ("message", "102290129340398", "text")
    assert (status.kind, status.waba_id, status.type) == ("status", "102290129340399", "read")
    assert status.subject == Subject("33612345678", None)
    assert status.contact is None, "the contact is in the other entry: never borrowed across changes"


def test_fields_that_are_not_split_keep_the_whole_value() -> None:
    (account,) = split(sample("account_update_violation"))
    (template,) = split(sample("message_template_status_update_approved"))
    (unknown,) = split(sample("synthetic_unknown_field"))
    assert (account.kind, account.type, account.timestamp) == ("account", "account_update", 1743451903)
    assert (template.kind, template.type, template.timestamp) == (
        "template",
        "message_template_status_update",
        1751247548,
    )
    assert (unknown.kind, unknown.type, unknown.phone_number_id) == ("unknown", "some_future_field", None)
    assert unknown.payload == {"anything": ["new", 1, None]}


def test_declined_history_sharing_is_one_error_with_the_whole_history_item() -> None:
    (event,) = split(sample("history_sharing_declined_error"))
    history_item = json.loads(sample("history_sharing_declined_error"))["entry"][0]["changes"][0]["value"]["history"][0]
    assert (event.kind, event.field, event.subject) == ("error", "history", None)
    assert event.payload == history_item


def test_the_event_id_derivation_is_pinned() -> None:
    """The documented formula, recomputed: changing it would re-identify (and duplicate) the whole archive."""
    raw = sample("inbound_text")
    (event,) = split(raw)
    message = json.loads(raw)["entry"][0]["changes"][0]["value"]["messages"][0]
    canonical = json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical_hash(message) == hashlib.sha256(canonical).hexdigest()
    parts = ("v1", WABA, "message", PHONE_NUMBER_ID, message["id"], hashlib.sha256(canonical).hexdigest())
    assert event.event_id == hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@pytest.mark.parametrize("path", [pytest.param(path, id=path.stem) for path in FILES])
def test_event_ids_survive_reserialisation_and_redelivery(path: Path) -> None:
    raw = path.read_bytes()
    parsed = json.loads(raw)
    variants = [
        raw,
        meta_encode(raw),
        json.dumps(parsed, indent=3, ensure_ascii=False).encode(),
        json.dumps(parsed, separators=(",", ":"), ensure_ascii=True).encode(),
        json.dumps(parsed, sort_keys=True).encode("utf-16"),
    ]
    ids = {
        tuple(event.event_id for event in split(variant, received_at=f"redelivery {n}"))
        for n, variant in enumerate(variants)
    }
    assert len(ids) == 1


def test_identical_objects_in_one_post_collapse_into_one_event() -> None:
    """Deliberate deduplication: the same error twice in a POST is one event; different errors are two."""
    error = {"code": 131000, "title": "Something went wrong"}
    twice = split(envelope(messages_change(errors=[error, dict(error)])))
    assert [event.kind for event in twice] == ["error"]
    different = split(envelope(messages_change(errors=[error, {**error, "code": 130429}])))
    assert len({event.event_id for event in different}) == 2


def test_the_same_account_update_on_another_day_is_a_new_event() -> None:
    def account_update(time: int) -> bytes:
        value = {"event": "ACCOUNT_VIOLATION", "violation_info": {"violation_type": "ADULT"}}
        change = {"field": "account_update", "value": value}
        entry = {"id": WABA, "time": time, "changes": [change]}
        return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()

    (monday,) = split(account_update(1743451903))
    (again,) = split(account_update(1743451903))
    (tuesday,) = split(account_update(1743538303))
    assert monday.event_id == again.event_id != tuesday.event_id


# --- calls, marketing preferences, synced contacts: every personal record has its person -----------------------

BSUID = "user.9373795779eb6441c8adb2eaee5b848e7dd174ddd302d7db62142f4722d574b6"
UI_CALL = "wacid.ABGGFjFVU2AfAgo6V-Hc5eCgK5Gh"
BI_CALL = "wacid.HBgLMTIxODU1NTI4MjgVAgARGCAyODRQIAFRoA"
BI_NUMBER_ID = "436666719526789"


def change_of(field: str, **value: Any) -> dict[str, Any]:
    metadata = {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID}
    return {"field": field, "value": {"messaging_product": "whatsapp", "metadata": metadata, **value}}


def first_value(name: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(sample(name))["entry"][0]["changes"][0]["value"]
    return value


@pytest.mark.parametrize(
    ("name", "kind", "subject", "type_", "timestamp", "message_id", "number_id"),
    [
        pytest.param(
            "calls_connect_user_initiated",
            "call",
            Subject("16315553602", None),
            "connect",
            1671644824,
            UI_CALL,
            PHONE_NUMBER_ID,
            id="user-initiated connect: the caller",
        ),
        pytest.param(
            "calls_terminate_user_initiated",
            "call",
            Subject("16315553602", None),
            "terminate",
            1671644824,
            UI_CALL,
            PHONE_NUMBER_ID,
            id="user-initiated terminate: neither side is the display number, the direction decides",
        ),
        pytest.param(
            "calls_connect_user_initiated_bsuid_no_phone",
            "call",
            Subject(None, BSUID),
            "connect",
            1750030073,
            "wacid.HBgLMTY1MDM4Nzk0MzkVAgARGCAyODRQIAFRoA",
            PHONE_NUMBER_ID,
            id="user-initiated connect from a username: from_user_id",
        ),
        pytest.param(
            "calls_connect_business_initiated",
            "call",
            Subject("12185552828", None),
            "connect",
            1749196895,
            BI_CALL,
            BI_NUMBER_ID,
            id="business-initiated connect: the callee",
        ),
        pytest.param(
            "calls_terminate_business_initiated",
            "call",
            Subject("12185552828", None),
            "terminate",
            1749197480,
            BI_CALL,
            BI_NUMBER_ID,
            id="business-initiated terminate: the callee",
        ),
        pytest.param(
            "calls_status_ringing_business_initiated",
            "status",
            Subject("12185552828", None),
            "RINGING",
            1749197000,
            BI_CALL,
            BI_NUMBER_ID,
            id="call status: the recipient",
        ),
        pytest.param(
            "user_preferences_stop",
            "preference",
            Subject("16505551234", None),
            "stop",
            1739321024,
            None,
            PHONE_NUMBER_ID,
            id="marketing stop",
        ),
        pytest.param(
            "user_preferences_resume",
            "preference",
            Subject("16505551234", None),
            "resume",
            1731705721,
            None,
            PHONE_NUMBER_ID,
            id="marketing resume",
        ),
        pytest.param(
            "user_preferences_stop_bsuid_username",
            "preference",
            Subject(None, BSUID),
            "stop",
            1750030073,
            None,
            PHONE_NUMBER_ID,
            id="marketing stop from a username",
        ),
        pytest.param(
            "smb_app_state_sync_contact_add",
            "contact_sync",
            Subject("16505551234", None),
            "add",
            1739321024,
            None,
            PHONE_NUMBER_ID,
            id="contact added",
        ),
        pytest.param(
            "smb_app_state_sync_contact_remove",
            "contact_sync",
            Subject("16505551234", None),
            "remove",
            1739407424,
            None,
            PHONE_NUMBER_ID,
            id="contact removed",
        ),
        pytest.param(
            "smb_app_state_sync_contact_bsuid_no_phone",
            "contact_sync",
            Subject(None, BSUID),
            "add",
            1750030073,
            None,
            PHONE_NUMBER_ID,
            id="contact with a user id and no number",
        ),
    ],
)
def test_calls_preferences_and_synced_contacts_belong_to_their_person(
    name: str,
    kind: str,
    subject: Subject,
    type_: str,
    timestamp: int,
    message_id: str | None,
    number_id: str,
) -> None:
    (event,) = split(sample(name))
    value = first_value(name)
    assert (event.kind, event.subject, event.type, event.timestamp) == (kind, subject, type_, timestamp)
    assert (event.message_id, event.original_message_id, event.phone_number_id) == (message_id, None, number_id)
    assert event.field == json.loads(sample(name))["entry"][0]["changes"][0]["field"]
    assert event.key() == f"{number_id}:{subject.wa_id or subject.user_id}".encode()
    # The subject's contacts entry when Meta sent one, matched by wa_id or user_id.
    assert event.contact == (value["contacts"][0] if "contacts" in value else None)
    business = value["metadata"]["display_phone_number"]
    assert business not in (subject.wa_id, subject.user_id), "the person is never the business number"


def test_the_items_of_the_new_fields_are_their_events_payloads_verbatim() -> None:
    for name, key in [
        ("calls_connect_user_initiated", "calls"),
        ("calls_status_ringing_business_initiated", "statuses"),
        ("user_preferences_stop", "user_preferences"),
        ("smb_app_state_sync_contact_add", "state_sync"),
    ]:
        body = json.loads(sample(name))
        (event,) = split_webhook(body, raw_sha256="0" * 64, signature=None, received_at=RECEIVED_AT)
        assert event.payload is body["entry"][0]["changes"][0]["value"][key][0]


@pytest.mark.parametrize(
    ("call", "display", "subject"),
    [
        pytest.param(
            {"from": "15550783881", "to": "33612345678"},
            "15550783881",
            Subject("33612345678", None),
            id="the business calls: the callee, even without a direction",
        ),
        pytest.param(
            {"from": "33612345678", "to": "15550783881"},
            "15550783881",
            Subject("33612345678", None),
            id="the user calls: the caller",
        ),
        pytest.param(
            {"from": "33612345678", "to": "15550783881", "direction": "BUSINESS_INITIATED"},
            "15550783881",
            Subject("33612345678", None),
            id="the business's number beats a contradicting direction",
        ),
        pytest.param(
            {"from": "+1 555-078-3881", "to": "33612345678"},
            "15550783881",
            Subject("33612345678", None),
            id="the business's number written with + and dashes",
        ),
        pytest.param(
            {"from": "15550783881", "to": "", "to_user_id": "FR.1"},
            "15550783881",
            Subject(None, "FR.1"),
            id="a callee known by user id only",
        ),
        pytest.param(
            {"from": "", "from_user_id": "FR.1", "to": "15550783881", "direction": "USER_INITIATED"},
            "15550783881",
            Subject(None, "FR.1"),
            id="a caller known by user id only",
        ),
        pytest.param(
            {"from": "1", "to": "2", "direction": "USER_INITIATED"},
            "15550783881",
            Subject("1", None),
            id="neither side is the business: user-initiated, the caller",
        ),
        pytest.param(
            {"from": "1", "to": "2", "direction": "business_initiated"},
            "15550783881",
            Subject("2", None),
            id="neither side is the business: business-initiated, the callee",
        ),
        pytest.param({"from": "1", "to": "2"}, "15550783881", None, id="nothing tells: no subject, no guess"),
        pytest.param(
            {"from": "1", "to": "2", "direction": ["USER_INITIATED"]}, "15550783881", None, id="a direction not text"
        ),
        pytest.param(
            {"from": "15550783881", "to": "15550783881", "direction": "USER_INITIATED"},
            "15550783881",
            None,
            id="both sides are the business",
        ),
        pytest.param({"from": "15550783881", "direction": "BUSINESS_INITIATED"}, "15550783881", None, id="no callee"),
        pytest.param(
            {"from": "1", "to": "2", "direction": "USER_INITIATED"}, None, Subject("1", None), id="no display number"
        ),
    ],
)
def test_the_person_on_a_call_is_the_user_never_the_business(
    call: dict[str, Any], display: str | None, subject: Subject | None
) -> None:
    value: dict[str, Any] = {"calls": [{"id": "wacid.X", "event": "connect", **call}]}
    if display is not None:
        value["metadata"] = {"display_phone_number": display, "phone_number_id": PHONE_NUMBER_ID}
    (event,) = split(envelope({"field": "calls", "value": value}))
    assert (event.kind, event.subject, event.message_id, event.type) == ("call", subject, "wacid.X", "connect")


def test_a_call_status_in_the_messages_field_is_a_status_of_the_recipient() -> None:
    status = {"id": "wacid.X", "type": "call", "status": "ACCEPTED", "timestamp": "1749197000", "recipient_id": "9"}
    (event,) = split(envelope(messages_change(statuses=[status])))
    assert (event.kind, event.subject, event.type, event.message_id) == (
        "status",
        Subject("9", None),
        "ACCEPTED",
        "wacid.X",
    )


def test_a_terminate_without_an_event_name_is_typed_by_its_status_and_value_errors_stay_business_records() -> None:
    call = {"id": "wacid.X", "from": "33612345678", "to": "15550783881", "status": "FAILED", "timestamp": "5"}
    error = {"code": 138021, "title": "x", "error_data": {"details": "y"}}
    events = split(envelope(change_of("calls", calls=[call], errors=[error])))
    assert [(e.kind, e.type, e.subject) for e in events] == [
        ("call", "FAILED", Subject("33612345678", None)),
        ("error", "calls", None),
    ]
    assert events[1].payload == error


@pytest.mark.parametrize(
    "contact",
    [
        pytest.param({"full_name": "Pablo Morales"}, id="no phone number"),
        pytest.param({"phone_number": "", "full_name": "Pablo Morales"}, id="an empty phone number"),
        pytest.param({"phone_number": ["16505551234"]}, id="a phone number that is not text"),
        pytest.param("16505551234", id="a contact that is not an object"),
        pytest.param(None, id="no contact"),
    ],
)
def test_a_synced_contact_without_a_usable_number_stays_a_business_record(contact: Any) -> None:
    item = {"type": "contact", "contact": contact, "action": "add", "metadata": {"timestamp": "1739321024"}}
    (event,) = split(envelope(change_of("smb_app_state_sync", state_sync=[item])))
    assert (event.kind, event.subject, event.type, event.timestamp) == ("contact_sync", None, "add", 1739321024)
    assert event.key() == f"{PHONE_NUMBER_ID}:".encode()


def test_a_state_sync_item_of_another_type_is_kept_as_unknown() -> None:
    item = {"type": "label", "label": {"name": "VIP"}, "action": "add"}
    (event,) = split(envelope(change_of("smb_app_state_sync", state_sync=[item])))
    assert (event.kind, event.subject, event.payload) == ("unknown", None, item)


@pytest.mark.parametrize(
    ("field", "key", "item", "kind"),
    [
        pytest.param("calls", "calls", {"id": "wacid.A", "from": "1", "to": "15550783881"}, "call", id="calls"),
        pytest.param("user_preferences", "user_preferences", {"wa_id": "1", "value": "stop"}, "preference", id="prefs"),
        pytest.param(
            "smb_app_state_sync",
            "state_sync",
            {"type": "contact", "contact": {"phone_number": "1"}, "action": "add"},
            "contact_sync",
            id="state sync",
        ),
    ],
)
def test_the_new_fields_keep_junk_items_residue_and_empty_values(
    field: str, key: str, item: dict[str, Any], kind: str
) -> None:
    junk = split(envelope(change_of(field, **{key: ["not an object", 7, item]})))
    assert [(e.kind, e.subject) for e in junk] == [("unknown", None), ("unknown", None), (kind, Subject("1", None))]
    assert [e.payload for e in junk[:2]] == ["not an object", 7]
    _, residue = split(envelope(change_of(field, **{key: [item], "future": {"x": 1}})))
    assert (residue.kind, residue.subject, residue.payload) == ("unknown", None, {"future": {"x": 1}})
    empty_values: list[dict[str, Any]] = [{}, {key: []}, {key: {"not": "a list"}}, {"contacts": [{"wa_id": "1"}]}]
    for value in empty_values:
        (whole,) = split(envelope(change_of(field, **value)))
        assert (whole.kind, whole.type, whole.subject) == ("unknown", field, None)
    (not_an_object,) = split(envelope({"field": field, "value": [item]}))
    assert (not_an_object.kind, not_an_object.payload) == ("unknown", [item])


def test_ids_of_the_new_kinds_are_deterministic_and_distinct_per_item() -> None:
    stop = {"wa_id": "33612345678", "category": "marketing_messages", "value": "stop", "timestamp": 1739321024}
    other = {**stop, "wa_id": "33698765432"}
    body = envelope(change_of("user_preferences", user_preferences=[stop, other]))
    first, second = split(body)
    assert [first.subject, second.subject] == [Subject("33612345678", None), Subject("33698765432", None)]
    assert first.event_id != second.event_id
    assert [e.event_id for e in split(body, received_at="again")] == [first.event_id, second.event_id]
    resumed = split(envelope(change_of("user_preferences", user_preferences=[{**stop, "value": "resume"}])))
    assert resumed[0].event_id not in (first.event_id, second.event_id)
    # The documented formula: (canonical_hash(item),) for the kinds Meta gives no id.
    preference_parts = ("v1", WABA, "preference", PHONE_NUMBER_ID, canonical_hash(stop))
    assert first.event_id == hashlib.sha256("\x1f".join(preference_parts).encode()).hexdigest()[:32]
    # A call's connect and terminate are two events; the call id is part of the identity.
    (connect,) = split(sample("calls_connect_user_initiated"))
    (terminate,) = split(sample("calls_terminate_user_initiated"))
    assert connect.message_id == terminate.message_id
    assert connect.event_id != terminate.event_id
    call = json.loads(sample("calls_connect_user_initiated"))["entry"][0]["changes"][0]["value"]["calls"][0]
    call_parts = ("v1", WABA, "call", PHONE_NUMBER_ID, UI_CALL, canonical_hash(call))
    assert connect.event_id == hashlib.sha256("\x1f".join(call_parts).encode()).hexdigest()[:32]
    # Two contacts in one sync are two events of two people.
    contacts = [{"type": "contact", "contact": {"phone_number": n}, "action": "add"} for n in ("1", "2")]
    one, two = split(envelope(change_of("smb_app_state_sync", state_sync=contacts)))
    assert (one.subject, two.subject) == (Subject("1", None), Subject("2", None))
    assert one.event_id != two.event_id


def test_records_of_the_new_fields_are_no_longer_sealed_as_unknown() -> None:
    """Before, these fields were one `unknown` event without a subject (the business's record); the new kind is
    part of the event id, so a replay archives them again under their person."""
    (event,) = split(sample("smb_app_state_sync_contact_add"))
    value = first_value("smb_app_state_sync_contact_add")
    legacy = hashlib.sha256(
        "\x1f".join(("v1", WABA, "unknown", PHONE_NUMBER_ID, canonical_hash(value))).encode()
    ).hexdigest()[:32]
    assert event.kind == "contact_sync"
    assert event.event_id != legacy


# --- unusual but valid bodies: kept, never dropped, never a crash ------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            envelope(messages_change(messages=["not an object", {"id": "wamid.A", "from": "1", "type": "text"}])),
            [("unknown", "messages", None), ("message", "text", "wamid.A")],
            id="an item that is not an object is kept as unknown",
        ),
        pytest.param(
            envelope(messages_change(contacts=[{"wa_id": "1"}])),
            [("unknown", "messages", None)],
            id="a messages change without messages, statuses or errors",
        ),
        pytest.param(
            envelope(messages_change(messages=[], statuses=[])),
            [("unknown", "messages", None)],
            id="empty lists",
        ),
        pytest.param(envelope({"field": "messages"}), [("unknown", "messages", None)], id="a change without value"),
        pytest.param(
            envelope({"field": "messages", "value": ["a", "list"]}),
            [("unknown", "messages", None)],
            id="a value that is not an object",
        ),
        pytest.param(
            envelope(messages_change(messages=[{"id": "wamid.B", "from": "1", "type": "text"}], reactions=[{"x": 1}])),
            [("message", "text", "wamid.B"), ("unknown", "messages", None)],
            id="keys the splitter does not know are kept beside the items",
        ),
        pytest.param(
            envelope(messages_change(messages=[{"id": "wamid.C", "from": "1"}], statuses={"not": "a list"})),
            [("message", None, "wamid.C"), ("unknown", "messages", None)],
            id="a malformed item list is kept beside the valid ones",
        ),
        pytest.param(
            envelope(messages_change(messages=[{"id": 12345, "from": 33612345678, "timestamp": 1764001086}])),
            [("message", None, "12345")],
            id="numeric ids become strings",
        ),
        pytest.param(
            envelope({"field": "message_template_quality_update", "value": {"event": "x"}}),
            [("template", "message_template_quality_update", None)],
            id="another template field",
        ),
        pytest.param(
            envelope({"field": "template_category_update", "value": {"event": "x"}}),
            [("template", "template_category_update", None)],
            id="a template_ field",
        ),
        pytest.param(
            envelope({"field": "", "value": None}),
            [("unknown", "", None)],
            id="an empty field name",
        ),
    ],
)
def test_unusual_bodies_are_kept(body: bytes, expected: list[tuple[str, str | None, str | None]]) -> None:
    events = split(body)
    assert [(event.kind, event.type, event.message_id) for event in events] == expected
    for event in events:
        assert Event.from_json(event.to_json()) == event


def test_unknown_keys_are_kept_without_copying_the_split_items() -> None:
    message = {"id": "wamid.B", "from": "1", "type": "text"}
    _, residue = split(envelope(messages_change(messages=[message], reactions=[{"x": 1}])))
    assert residue.payload == {"reactions": [{"x": 1}]}
    assert residue.subject is None


@pytest.mark.parametrize(
    ("history", "message_ids"),
    [
        pytest.param(
            [{"threads": [{"id": "1", "messages": [{"id": "m1"}]}, {"id": "2"}, {"id": "3", "messages": []}]}],
            ["m1"],
            id="threads without messages yield nothing",
        ),
        pytest.param(
            [{"threads": [{"id": "1", "messages": [{"id": "m1"}, "junk"]}, "junk thread"]}],
            ["m1", None, None],
            id="junk threads and messages are kept as unknown",
        ),
        pytest.param(
            [{"threads": [{"id": "1"}]}],
            [None],
            id="nothing at all: the whole value is kept",
        ),
        pytest.param(
            [{"threads": [{"messages": [{"id": "m1"}]}]}],
            ["m1"],
            id="a thread without an id",
        ),
    ],
)
def test_history_threads_never_crash(history: list[Any], message_ids: list[str | None]) -> None:
    events = split(envelope({"field": "history", "value": {"history": history}}))
    assert [event.message_id for event in events] == message_ids


def test_same_message_in_two_history_threads_gives_two_events() -> None:
    message = {"id": "m1", "type": "text"}
    history = [{"threads": [{"id": "1", "messages": [message]}, {"id": "2", "messages": [message]}]}]
    events = split(envelope({"field": "history", "value": {"history": history}}))
    assert [event.subject for event in events] == [Subject("1", None), Subject("2", None)]
    assert events[0].event_id != events[1].event_id


@pytest.mark.parametrize(
    ("item", "subject"),
    [
        pytest.param({"from": "", "from_user_id": ""}, None, id="empty strings are absent"),
        pytest.param({"from": "", "from_user_id": "US.1"}, Subject(None, "US.1"), id="user id only"),
        pytest.param({"from": "1", "from_user_id": "US.1"}, Subject("1", "US.1"), id="both"),
        pytest.param({"from": True, "from_user_id": ["x"]}, None, id="not ids"),
        pytest.param({}, None, id="missing"),
    ],
)
def test_message_subjects(item: dict[str, Any], subject: Subject | None) -> None:
    (event,) = split(envelope(messages_change(messages=[{"id": "wamid.X", **item}])))
    assert event.subject == subject
    assert event.key() == f"{PHONE_NUMBER_ID}:{(subject.wa_id or subject.user_id) if subject else ''}".encode()


@pytest.mark.parametrize(
    ("contacts", "expected"),
    [
        pytest.param([{"wa_id": "1", "n": "a"}], {"wa_id": "1", "n": "a"}, id="by wa_id"),
        pytest.param([{"wa_id": "", "user_id": "US.1"}], {"wa_id": "", "user_id": "US.1"}, id="by user_id"),
        pytest.param([{"wa_id": "2"}, {"wa_id": "1", "n": "b"}], {"wa_id": "1", "n": "b"}, id="the matching one"),
        pytest.param([{"n": "no ids"}], None, id="a single contact without ids is not guessed"),
        pytest.param([{"wa_id": "2"}], None, id="a single contact of someone else"),
        pytest.param({"wa_id": "1"}, None, id="contacts not a list"),
        pytest.param(["junk", {"wa_id": "1"}], {"wa_id": "1"}, id="junk contacts are skipped"),
    ],
)
def test_contact_matching(contacts: Any, expected: Any) -> None:
    (event,) = split(
        envelope(messages_change(contacts=contacts, messages=[{"id": "m", "from": "1", "from_user_id": "US.1"}]))
    )
    assert event.contact == expected


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        pytest.param("1739230955", 1739230955, id="Meta's string"),
        pytest.param(1739230955, 1739230955, id="an integer"),
        pytest.param("", None, id="empty"),
        pytest.param("-5", None, id="negative"),
        pytest.param("17392309.5", None, id="fraction"),
        pytest.param("١٧٣٩٢٣٠٩٥٥", None, id="non-ASCII digits"),
        pytest.param("9" * 40, None, id="too long"),
        pytest.param(2**70, None, id="beyond int64"),
        pytest.param(True, None, id="a boolean"),
        pytest.param(1739230955.0, None, id="a float"),
    ],
)
def test_timestamps(timestamp: Any, expected: int | None) -> None:
    (event,) = split(envelope(messages_change(messages=[{"id": "m", "timestamp": timestamp}])))
    assert event.timestamp == expected


# --- envelope (de)serialisation ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [pytest.param(path, id=path.stem) for path in FILES])
def test_envelopes_round_trip(path: Path) -> None:
    for event in split(path.read_bytes()):
        encoded = event.to_json()
        assert encoded.startswith(b'{"schema":1,"event_id":"')
        decoded = json.loads(encoded)
        group = ["group_id"] if event.group_id is not None else []  # only a group's events carry it, last
        assert list(decoded) == [
            "schema",
            "event_id",
            "kind",
            "field",
            "received_at",
            "waba_id",
            "phone_number_id",
            "subject",
            "message_id",
            "original_message_id",
            "timestamp",
            "type",
            "payload",
            "contact",
            "delivery",
            *group,
        ]
        assert json.dumps(decoded, separators=(",", ":"), ensure_ascii=False).encode() == encoded, "not compact"
        assert Event.from_json(encoded) == event


def test_non_ascii_stays_utf8_and_a_lone_surrogate_still_round_trips() -> None:
    (reaction,) = split(sample("inbound_reaction"))
    assert reaction.payload["reaction"]["emoji"] in reaction.to_json().decode("utf-8")
    (broken,) = split(envelope(messages_change(messages=[{"id": "m", "from": "1", "text": {"body": "\ud83d"}}])))
    assert Event.from_json(broken.to_json()) == broken
    assert broken.key() == f"{PHONE_NUMBER_ID}:1".encode()


OUTBOUND_EVENT = Event(
    event_id="0123456789abcdef0123456789abcdef",
    kind="outbound",
    field="outbound",
    received_at=RECEIVED_AT,
    waba_id="",
    phone_number_id=PHONE_NUMBER_ID,
    subject=Subject("16505551234", None),
    message_id="wamid.X",
    original_message_id=None,
    timestamp=None,
    type="text",
    payload={"request": {"to": "16505551234"}, "response": {"messages": [{"id": "wamid.X"}]}},
    contact=None,
    delivery=Delivery(sha256="f" * 64, signature=None),
)


def _valid_envelope() -> dict[str, Any]:
    return OUTBOUND_EVENT.as_dict()


def _with(**changes: Any) -> bytes:
    return json.dumps({**_valid_envelope(), **changes}).encode()


def _without(key: str) -> bytes:
    data = _valid_envelope()
    del data[key]
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"", "not JSON", id="empty"),
        pytest.param(b"\xff\xfe", "not JSON", id="not UTF-8"),
        pytest.param(b"{nope", "not JSON", id="broken JSON"),
        pytest.param(b'{"schema":NaN}', "not JSON", id="NaN"),
        pytest.param(b'{"schema":1,"x":-1e400}', "not JSON", id="number beyond the double range"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested too deeply", id="too deep"),
        pytest.param(b"[]", "not a JSON object", id="a list"),
        pytest.param(b"{}", "'schema' must be 1", id="no schema"),
        pytest.param(_with(schema=2), "'schema' must be 1", id="schema 2"),
        pytest.param(_with(schema=True), "'schema' must be 1", id="schema true"),
        pytest.param(_with(schema="1"), "'schema' must be 1", id="schema as a string"),
        pytest.param(_without("payload"), "'payload' missing", id="no payload"),
        pytest.param(_without("delivery"), "'delivery' missing", id="no delivery"),
        pytest.param(_with(extra=1), "unexpected keys", id="an unexpected key"),
        pytest.param(_with(event_id="ab"), "'event_id' must be 32 lowercase hex digits", id="short event id"),
        pytest.param(_with(event_id="A" * 32), "'event_id' must be 32 lowercase hex digits", id="uppercase event id"),
        pytest.param(_with(kind="mesage"), "'kind' is not a known event kind", id="unknown kind"),
        pytest.param(_with(kind=["message"]), "'kind' is not a known event kind", id="kind not a string"),
        pytest.param(_with(field=1), "'field' must be a string", id="field not a string"),
        pytest.param(_with(waba_id=None), "'waba_id' must be a string", id="waba null"),
        pytest.param(_with(message_id=7), "'message_id' must be a string or null", id="message id a number"),
        pytest.param(_with(timestamp="1"), "'timestamp' must be an integer or null", id="timestamp a string"),
        pytest.param(_with(timestamp=False), "'timestamp' must be an integer or null", id="timestamp a boolean"),
        pytest.param(_with(timestamp=2**70), "'timestamp' must be unix seconds", id="timestamp beyond 64 bits"),
        pytest.param(_with(timestamp=-1), "'timestamp' must be unix seconds", id="timestamp negative"),
        pytest.param(_with(subject=["1"]), "'subject' must be null or an object", id="subject a list"),
        pytest.param(_with(subject={"wa_id": "1"}), "'subject' must be null or an object", id="subject half"),
        pytest.param(_with(subject={"wa_id": 1, "user_id": None}), "'subject' ids must be", id="subject id number"),
        pytest.param(_with(delivery={"sha256": "x"}), "'delivery' must be an object", id="delivery half"),
        pytest.param(
            _with(delivery={"sha256": "x" * 64, "signature": None}), "'delivery.sha256'", id="delivery not hex"
        ),
        pytest.param(
            _with(delivery={"sha256": "a" * 64, "signature": 1}), "'delivery.signature'", id="signature a number"
        ),
    ],
)
def test_from_json_rejects_what_is_not_a_schema_1_envelope(raw: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason.replace("(", r"\(")):
        Event.from_json(raw)


def test_from_json_accepts_an_outbound_envelope() -> None:
    assert Event.from_json(OUTBOUND_EVENT.to_json()) == OUTBOUND_EVENT


# --- rejected webhooks -------------------------------------------------------------------------------------------

PHONE = "16505551234"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"not json " + PHONE.encode(), "body is not JSON", id="not JSON"),
        pytest.param(b"", "body is not JSON", id="empty"),
        pytest.param(b"\xff\xfe\xfd", "body is not JSON", id="not Unicode"),
        pytest.param(b'{"object":NaN}', "body is not JSON", id="NaN"),
        pytest.param(b'{"object":Infinity}', "body is not JSON", id="Infinity"),
        pytest.param(b'{"x":1e400}', "body is not JSON", id="number beyond the double range"),
        pytest.param(b'{"x":' + b"9" * 5000 + b"}", "body is not JSON", id="integer over the digit limit"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "body is nested too deeply", id="nested too deeply"),
        pytest.param(b"[]", "body must be a JSON object", id="a list"),
        pytest.param(b'"whatsapp_business_account"', "body must be a JSON object", id="a string"),
        pytest.param(
            b'{"object":"page","entry":[]}', "'object' must be 'whatsapp_business_account'", id="another object"
        ),
        pytest.param(b'{"entry":[]}', "'object' must be 'whatsapp_business_account'", id="no object"),
        pytest.param(b'{"object":"whatsapp_business_account"}', "'entry' must be a list", id="no entry"),
        pytest.param(
            b'{"object":"whatsapp_business_account","entry":{"id":"1"}}', "'entry' must be a list", id="entry an object"
        ),
        pytest.param(
            b'{"object":"whatsapp_business_account","entry":["' + PHONE.encode() + b'"]}',
            "each entry must be an object",
            id="entry not an object",
        ),
        pytest.param(
            b'{"object":"whatsapp_business_account","entry":[{"changes":[]}]}',
            "each entry needs a WABA 'id' (a non-empty string or an integer)",
            id="no WABA id",
        ),
        pytest.param(
            b'{"object":"whatsapp_business_account","entry":[{"id":1.5,"changes":[]}]}',
            "each entry needs a WABA 'id' (a non-empty string or an integer)",
            id="WABA id a float",
        ),
        pytest.param(
            b'{"object":"whatsapp_business_account","entry":[{"id":true,"changes":[]}]}',
            "each entry needs a WABA 'id' (a non-empty string or an integer)",
            id="WABA id a boolean",
        ),
        pytest.param(
            b'{"object":"whatsapp_business_account","entry":[{"id":"","changes":[]}]}',
            "each entry needs a WABA 'id' (a non-empty string or an integer)",
            id="WABA id empty",
        ),
        pytest.param(
            b'{"object":"whatsapp_business_account","entry":[{"id":"1"}]}',
            "each entry needs a 'changes' list",
            id="no changes",
        ),
        pytest.param(
            b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":{}}]}',
            "each entry needs a 'changes' list",
            id="changes an object",
        ),
        pytest.param(
            b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"value":{"from":"'
            + PHONE.encode()
            + b'"}}]}]}',
            "each change must be an object with a string 'field'",
            id="change without field",
        ),
        pytest.param(
            b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":7}]}]}',
            "each change must be an object with a string 'field'",
            id="field not a string",
        ),
        pytest.param(
            b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":["messages"]}]}',
            "each change must be an object with a string 'field'",
            id="change not an object",
        ),
    ],
)
def test_malformed_webhooks_are_400_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(WebhookRejected) as rejected:
        split(raw)
    assert (rejected.value.status, rejected.value.reason, str(rejected.value)) == (400, reason, reason)
    assert PHONE not in rejected.value.reason, "a reason never quotes the body"


def test_one_bad_entry_rejects_the_whole_post() -> None:
    good = json.loads(sample("inbound_text"))
    good["entry"].append({"id": "1"})
    with pytest.raises(WebhookRejected):
        split(json.dumps(good).encode())


def test_an_entry_id_may_be_an_integer() -> None:
    (event,) = split(envelope(messages_change(messages=[{"id": "m"}]), waba_id=102290129340398))
    assert event.waba_id == WABA


def test_depth_at_the_recursion_limit_is_rejected_not_raised() -> None:
    """Around the interpreter's recursion limit, decoding may succeed where hashing the payload fails."""
    outcomes = set()
    for depth in range(600, 1200):
        value = "[" * depth + "]" * depth
        raw = envelope({"field": "x", "value": None}).replace(b"null", value.encode())
        try:
            events = split(raw)
        except WebhookRejected as rejected:
            outcomes.add(rejected.reason)
            continue
        outcomes.add("split")
        for event in events:
            assert Event.from_json(event.to_json()) == event
    assert outcomes == {"split", "body is nested too deeply"}


# --- properties: arbitrary input raises nothing but WebhookRejected ---------------------------------------------

DOMAIN_WORDS = st.sampled_from(
    [
        "object",
        "whatsapp_business_account",
        "entry",
        "id",
        "time",
        "changes",
        "field",
        "value",
        "metadata",
        "phone_number_id",
        "display_phone_number",
        "contacts",
        "wa_id",
        "user_id",
        "messages",
        "statuses",
        "errors",
        "message_echoes",
        "history",
        "threads",
        "from",
        "from_user_id",
        "to",
        "recipient_id",
        "recipient_user_id",
        "status",
        "deleted",
        "type",
        "revoke",
        "edit",
        "original_message_id",
        "timestamp",
        "smb_message_echoes",
        "account_update",
        "message_template_status_update",
        "calls",
        "direction",
        "USER_INITIATED",
        "BUSINESS_INITIATED",
        "to_user_id",
        "event",
        "user_preferences",
        "smb_app_state_sync",
        "state_sync",
        "contact",
        "phone_number",
        "action",
        "",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | DOMAIN_WORDS
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(DOMAIN_WORDS | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=40,
)
IDS = st.sampled_from(["16505551234", "", "US.1", "wamid.A"]) | st.integers(min_value=0, max_value=10**15)
ITEMS = (
    st.fixed_dictionaries(
        {},
        optional={
            "id": IDS | JSON_VALUES,
            "from": IDS,
            "from_user_id": IDS,
            "to": IDS,
            "to_user_id": IDS,
            "wa_id": IDS,
            "user_id": IDS,
            "direction": st.sampled_from(["USER_INITIATED", "BUSINESS_INITIATED"]) | JSON_VALUES,
            "event": st.sampled_from(["connect", "terminate"]) | JSON_VALUES,
            "contact": st.fixed_dictionaries({}, optional={"phone_number": IDS, "user_id": IDS}) | JSON_VALUES,
            "action": st.sampled_from(["add", "remove"]) | JSON_VALUES,
            "value": st.sampled_from(["stop", "resume"]) | JSON_VALUES,
            "recipient_id": IDS,
            "recipient_user_id": IDS,
            "status": st.sampled_from(["sent", "deleted"]) | JSON_VALUES,
            "type": st.sampled_from(["text", "revoke", "edit", "contact", "call"]) | JSON_VALUES,
            "revoke": st.fixed_dictionaries({"original_message_id": IDS}) | JSON_VALUES,
            "edit": st.fixed_dictionaries({"original_message_id": IDS}) | JSON_VALUES,
            "timestamp": st.sampled_from(["1739230955", "x"]) | JSON_VALUES,
        },
    )
    | JSON_VALUES
)
ITEM_LISTS = st.lists(ITEMS, max_size=4) | JSON_VALUES
THREADS = st.fixed_dictionaries({}, optional={"id": IDS | JSON_VALUES, "messages": ITEM_LISTS}) | JSON_VALUES
VALUES = (
    st.fixed_dictionaries(
        {},
        optional={
            "metadata": st.fixed_dictionaries({"phone_number_id": IDS, "display_phone_number": IDS}) | JSON_VALUES,
            "contacts": st.lists(st.fixed_dictionaries({"wa_id": IDS, "user_id": IDS}) | JSON_VALUES) | JSON_VALUES,
            "messages": ITEM_LISTS,
            "statuses": ITEM_LISTS,
            "errors": ITEM_LISTS,
            "message_echoes": ITEM_LISTS,
            "calls": ITEM_LISTS,
            "user_preferences": ITEM_LISTS,
            "state_sync": ITEM_LISTS,
            "history": st.lists(
                st.fixed_dictionaries({}, optional={"threads": st.lists(THREADS) | JSON_VALUES, "errors": JSON_VALUES})
                | JSON_VALUES
            )
            | JSON_VALUES,
            "extra": JSON_VALUES,
        },
    )
    | JSON_VALUES
)
CHANGES = st.fixed_dictionaries(
    {
        "field": st.sampled_from(
            [
                "messages",
                "smb_message_echoes",
                "history",
                "calls",
                "user_preferences",
                "smb_app_state_sync",
                "account_update",
                "x",
            ]
        )
    },
    optional={"value": VALUES},
)
ENTRIES = st.fixed_dictionaries(
    {"id": st.just(WABA) | st.integers(min_value=0), "changes": st.lists(CHANGES, max_size=3)},
    optional={"time": st.integers(min_value=0, max_value=2**40) | JSON_VALUES},
)
# Mostly valid envelopes with arbitrary contents, so the splitter itself (not the envelope check) is exercised.
WEBHOOK_SHAPED = st.fixed_dictionaries({"object": st.just("whatsapp_business_account"), "entry": st.lists(ENTRIES)})


def check_splits_or_rejects(raw: bytes) -> None:
    """parse_webhook either rejects with a 400 or returns events that serialise, round-trip and key."""
    try:
        events = split(raw)
    except WebhookRejected as rejected:
        status: int | None = rejected.status
    else:
        status = None
    if status is not None:
        assert status == 400
        return
    assert len({event.event_id for event in events}) == len(events)
    for event in events:
        assert Event.from_json(event.to_json()) == event
        assert isinstance(event.key(), bytes)


@settings(max_examples=300, deadline=None, database=None)
@given(JSON_VALUES)
def test_arbitrary_json_raises_nothing_but_webhook_rejected(value: Any) -> None:
    check_splits_or_rejects(json.dumps(value).encode())


@settings(max_examples=300, deadline=None, database=None)
@given(WEBHOOK_SHAPED)
def test_webhook_shaped_json_raises_nothing_but_webhook_rejected(body: Any) -> None:
    check_splits_or_rejects(json.dumps(body).encode())


@settings(max_examples=200, deadline=None, database=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_nothing_but_webhook_rejected(raw: bytes) -> None:
    check_splits_or_rejects(raw)


@st.composite
def mutated_samples(draw: st.DrawFn) -> bytes:
    """A real sample with one to three of its values replaced by arbitrary JSON or removed."""
    body = copy.deepcopy(json.loads(sample(draw(st.sampled_from(sorted(EXPECTED_KINDS))))))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        places = list(json_slots(body))
        if not places:
            break
        container, key = draw(st.sampled_from(places))
        if draw(st.booleans()):
            container[key] = draw(JSON_VALUES)
        else:
            del container[key]
    encoded = json.dumps(body, ensure_ascii=draw(st.booleans())).encode()
    return encoded.replace(b"/", b"\\/") if draw(st.booleans()) else encoded


@settings(max_examples=400, deadline=None, database=None)
@given(mutated_samples())
def test_mutated_real_payloads_raise_nothing_but_webhook_rejected(raw: bytes) -> None:
    check_splits_or_rejects(raw)


@pytest.mark.parametrize(
    "number",
    [2**64, 10**19, -(2**63) - 1, 2**63 - 1, 123456789012345678901234567890],
    ids=["2**64", "10**19", "below int64", "int64 max", "30 digits"],
)
def test_from_json_keeps_long_integers_exact(number: int) -> None:
    """The fast decoder would turn integers beyond 64 bits into floats; the payload must stay as sent."""
    event = Event.from_json(_with(payload={"n": number, "nested": [{"m": number}]}))
    assert event.payload == {"n": number, "nested": [{"m": number}]}
    assert type(event.payload["n"]) is int


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**30], ids=["2**64", "below int64", "10**30"])
def test_webhook_payloads_keep_long_integers_exact(number: int) -> None:
    (event,) = split(envelope(messages_change(messages=[{"id": "m", "type": "text", "x": number}])))
    assert event.payload["x"] == number
    assert type(event.payload["x"]) is int
    assert Event.from_json(event.to_json()).payload["x"] == number


def test_webhook_bodies_in_utf16_are_still_decoded() -> None:
    body = envelope(messages_change(messages=[{"id": "m", "type": "text", "text": {"body": "é"}}]))
    (event,) = split(body.decode().encode("utf-16"))
    assert event.payload["text"] == {"body": "é"}


@pytest.mark.parametrize("name", ["inbound_text", "inbound_image", "status_delivered"])
def test_an_envelope_is_held_in_a_buffer_of_its_own_size(name: str) -> None:
    """The archiver holds thousands of envelopes per write: orjson's grown buffer (about ten times the length) would be
    most of its heap."""
    (event, *_) = split(sample(name))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        encoded = event.to_json()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert Event.from_json(encoded) == event
    assert held <= len(encoded) + 256, f"{held} bytes held for a {len(encoded)}-byte envelope"
