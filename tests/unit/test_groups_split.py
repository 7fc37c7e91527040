"""Cloud API groups in the splitter: every group sample, whose record each event is, and the group id's journey
through the envelope (issue #15, "Groups")."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from typing import Any

import orjson
import pytest
from rich.console import Console

from devtools.samples import payloads_dir
from services.cli.render import group_change, group_table
from services.core.events import EnvelopeError, Event, Subject, parse_webhook, split_webhook
from services.core.pseudonym import group_ref, message_ref
from services.ingest.outbound import outbound_event
from services.review.assembly import assemble

pytestmark = pytest.mark.unit

GROUP = "Y2FwaV9ncm91cDoxNzA1NTU1MDEzOToxMjAzNjM0MDQ2OTQyMzM4MjAZD"
PHONE_NUMBER_ID = "106540352242922"
PEPPER = b"pepper-for-unit-tests"


@cache
def sample(name: str) -> bytes:
    return (payloads_dir() / f"{name}.json").read_bytes()


def split(raw: bytes) -> list[Event]:
    return parse_webhook(raw, raw_sha256=hashlib.sha256(raw).hexdigest(), signature=None, received_at="-")


def group_webhook(field: str, *groups: Any, value_of_groups: Any = None) -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
        "groups": list(groups) if value_of_groups is None else value_of_groups,
    }
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": field, "value": value}]}],
    }
    return json.dumps(body).encode()


def first_group_item(name: str) -> dict[str, Any]:
    item: dict[str, Any] = json.loads(sample(name))["entry"][0]["changes"][0]["value"]["groups"][0]
    return item


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param(
            "inbound_group_text",
            [("message", Subject("16505551234", None), "text", 1739321024)],
            id="a group message stays its sender's",
        ),
        pytest.param(
            "group_participants_update_add",
            [("group_participant", Subject("16505551234", None), "group_participants_add", 1739320500)],
            id="a participant joins by the invite link",
        ),
        pytest.param(
            "group_participants_update_remove",
            [
                ("group_participant", Subject("16505559876", None), "group_participants_remove", 1739322000),
                ("group_participant", Subject("16505554321", None), "group_participants_remove", 1739322000),
            ],
            id="the business removes two: one record each, by the number it gave",
        ),
        pytest.param(
            "group_participants_update_leave",
            [("group_participant", Subject("16505551234", None), "group_participants_remove", 1739322600)],
            id="a participant leaves",
        ),
        pytest.param(
            "group_lifecycle_update_create",
            [("group", None, "group_create", 1739320000)],
            id="creation: the business's record",
        ),
        pytest.param(
            "group_settings_update",
            [("group", None, "group_settings_update", 1739321500)],
            id="settings: the business's record",
        ),
        pytest.param(
            "group_status_update_suspended",
            [("group", None, "group_suspend", 1739323000)],
            id="suspension: the business's record",
        ),
    ],
)
def test_every_group_sample_has_its_person_and_its_group(
    name: str, expected: list[tuple[str, Subject | None, str, int]]
) -> None:
    events = split(sample(name))
    assert [(e.kind, e.subject, e.type, e.timestamp) for e in events] == expected
    assert {e.group_id for e in events} == {GROUP}
    assert {e.phone_number_id for e in events} == {PHONE_NUMBER_ID}


def test_a_participant_record_holds_that_participant_and_no_other() -> None:
    item = first_group_item("group_participants_update_remove")
    first, second = split(sample("group_participants_update_remove"))
    context = {k: v for k, v in item.items() if k != "removed_participants"}
    assert first.payload == {**context, "removed_participants": [{"input": "16505559876"}]}
    assert second.payload == {**context, "removed_participants": [{"input": "16505554321"}]}
    assert "16505554321" not in json.dumps(first.payload)
    assert first.event_id != second.event_id


def test_the_participant_and_group_objects_are_meta_s_own() -> None:
    """Not copied: the participant entry (and a group item whole) is the very object the decoder produced."""
    participants = json.loads(sample("group_participants_update_remove"))
    (item,) = participants["entry"][0]["changes"][0]["value"]["groups"]
    events = split_webhook(participants, raw_sha256="0" * 64, signature=None, received_at="-")
    assert [e.payload["removed_participants"][0] for e in events] == item["removed_participants"]
    assert all(
        e.payload["removed_participants"][0] is p for e, p in zip(events, item["removed_participants"], strict=True)
    )
    settings = json.loads(sample("group_settings_update"))
    (update,) = split_webhook(settings, raw_sha256="0" * 64, signature=None, received_at="-")
    assert update.payload is settings["entry"][0]["changes"][0]["value"]["groups"][0]


@pytest.mark.parametrize(
    ("person", "subject"),
    [
        pytest.param({"wa_id": "16505551234"}, Subject("16505551234", None), id="wa_id"),
        pytest.param(
            {"wa_id": "16505551234", "user_id": "US.13491208655302741918", "username": "@sheena"},
            Subject("16505551234", "US.13491208655302741918"),
            id="wa_id and user id (BSUID)",
        ),
        pytest.param({"user_id": "US.13491208655302741918"}, Subject(None, "US.13491208655302741918"), id="user id"),
        pytest.param({"input": "+1 650-555-1234"}, Subject("16505551234", None), id="input: a number as written"),
        pytest.param({"input": "US.13491208655302741918"}, Subject(None, "US.13491208655302741918"), id="input: BSUID"),
        pytest.param(
            {"input": "16505559999", "wa_id": "16505551234"}, Subject("16505551234", None), id="wa_id over input"
        ),
        pytest.param({"input": ""}, None, id="nobody: the business's record"),
        pytest.param("16505551234", None, id="not an object"),
    ],
)
def test_a_participant_is_found_by_every_identifier_meta_gives(person: Any, subject: Subject | None) -> None:
    item = {"timestamp": "1739320500", "group_id": GROUP, "type": "group_participants_add"}
    (event,) = split(group_webhook("group_participants_update", {**item, "added_participants": [person]}))
    assert (event.kind, event.subject, event.group_id) == ("group_participant", subject, GROUP)


def test_a_join_request_is_the_requester_s_and_a_failed_removal_the_participant_s() -> None:
    request = {
        "timestamp": "1739320100",
        "group_id": GROUP,
        "type": "group_join_request_created",
        "join_request_id": "4a2f0c",
        "wa_id": "16505557777",
    }
    failed = {
        "timestamp": "1739320200",
        "group_id": GROUP,
        "type": "group_participants_remove",
        "request_id": "r",
        "failed_participants": [{"input": "16505558888", "errors": [{"code": 131000}]}],
        "errors": [{"code": 131000}],
    }
    nobody = {"timestamp": "1739320300", "group_id": GROUP, "type": "group_participants_remove", "errors": [{}]}
    events = split(group_webhook("group_participants_update", request, failed, nobody))
    assert [(e.kind, e.subject) for e in events] == [
        ("group_participant", Subject("16505557777", None)),
        ("group_participant", Subject("16505558888", None)),
        ("group", None),
    ]
    assert events[0].payload == request
    assert events[2].payload == nobody


def test_group_statuses_are_the_participant_s_with_the_group_id() -> None:
    first, second = split(sample("status_group_aggregated_multiple_statuses"))
    assert (first.subject, first.group_id) == (Subject("16505551234", None), "120363025318392938@g.us")
    assert second.group_id == "120363025318392938@g.us"
    (read,) = split(sample("status_read_group"))
    assert (read.subject, read.group_id) == (
        Subject("<GROUP_PARTICIPANT_USER_PHONE_NUMBER>", "US.123456"),
        "fowefinoewcnw",
    )
    assert read.contact is not None  # the participant's contacts entry, matched by user id
    assert read.contact["user_id"] == "US.123456"
    # Meta's groups page also spells the participant `participant_recipient_id`.
    status = {
        "id": "wamid.G",
        "status": "read",
        "timestamp": "1739321100",
        "recipient_id": GROUP,
        "recipient_type": "group",
        "participant_recipient_id": "16505554321",
    }
    body = json.loads(sample("status_sent"))
    body["entry"][0]["changes"][0]["value"]["statuses"] = [status]
    (spelt,) = split(json.dumps(body).encode())
    assert (spelt.subject, spelt.group_id, spelt.message_id) == (Subject("16505554321", None), GROUP, "wamid.G")


def test_events_outside_groups_are_unchanged() -> None:
    for name in ("inbound_text", "status_sent", "smb_message_echoes_text", "calls_connect_user_initiated"):
        for event in split(sample(name)):
            assert event.group_id is None
            assert b"group_id" not in event.to_json()


def test_unsplittable_group_values_are_kept_as_unknown() -> None:
    (not_a_list,) = split(group_webhook("group_status_update", value_of_groups={"x": 1}))
    assert (not_a_list.kind, not_a_list.group_id) == ("unknown", None)
    item, junk = split(group_webhook("group_status_update", "not an object", {"type": "group_suspend"}))
    assert (item.kind, item.payload) == ("unknown", "not an object")
    assert (junk.kind, junk.group_id, junk.type) == ("group", None, "group_suspend")


def test_the_group_id_round_trips_through_the_envelope_and_old_envelopes_still_read() -> None:
    (event,) = split(sample("inbound_group_text"))
    encoded = event.to_json()
    assert list(orjson.loads(encoded))[-1] == "group_id"
    assert Event.from_json(encoded) == event
    envelope = orjson.loads(encoded)
    del envelope["group_id"]
    assert Event.from_json(orjson.dumps(envelope)).group_id is None  # what the topic held before groups
    for bad in ("", 7, None):
        with pytest.raises(EnvelopeError, match="'group_id' must be a non-empty string"):
            Event.from_json(orjson.dumps({**envelope, "group_id": bad}))
    with pytest.raises(EnvelopeError, match="unexpected keys"):
        Event.from_json(orjson.dumps({**envelope, "group": GROUP}))


def test_an_outbound_message_to_a_group_is_the_business_s_record_of_the_group() -> None:
    request: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "group",
        "to": GROUP,
        "type": "text",
        "text": {"body": "Welcome, everyone"},
    }
    response = {"messaging_product": "whatsapp", "messages": [{"id": "wamid.OUTGROUP"}]}

    def report(request: dict[str, Any]) -> bytes:
        return orjson.dumps({"phone_number_id": PHONE_NUMBER_ID, "request": request, "response": response})

    event = outbound_event(report(request), received_at="2026-12-01T10:00:00.000Z")
    assert (event.kind, event.subject, event.contact, event.group_id) == ("outbound", None, None, GROUP)
    one_to_one = outbound_event(
        report({**request, "recipient_type": "individual", "to": "16505551234"}), received_at="2026-12-01T10:00:00.000Z"
    )
    assert (one_to_one.subject, one_to_one.group_id) == (Subject("16505551234", None), None)


def test_group_ref_is_a_keyed_pseudonym_apart_from_message_refs() -> None:
    ref = group_ref(PEPPER, GROUP)
    assert len(ref) == 64
    assert set(ref) <= set("0123456789abcdef")
    assert ref == group_ref(PEPPER, GROUP)
    assert ref != group_ref(b"another pepper", GROUP)
    assert ref != message_ref(PEPPER, GROUP)  # domain separation: the same text as a wamid is another reference
    assert GROUP not in ref
    with pytest.raises(ValueError, match="needs a group id"):
        group_ref(PEPPER, "")
    with pytest.raises(ValueError, match="non-empty pepper"):
        group_ref(b"", GROUP)


def test_a_group_timeline_reads_as_who_did_what() -> None:
    names = [
        "group_lifecycle_update_create",
        "group_participants_update_add",
        "inbound_group_text",
        "group_settings_update",
        "group_participants_update_remove",
        "group_participants_update_leave",
        "group_status_update_suspended",
    ]
    envelopes = [orjson.loads(e.to_json()) for name in names for e in split(sample(name))]
    timeline = assemble(envelopes)
    assert [group_change(m) for m in timeline] == [
        ("business", "[group created] test invite link"),
        ("16505551234", "[joined by invite link]"),
        ("16505551234", "What do you all think about this?"),
        ("business", "[settings] subject: Test Subject; description: Test Description; new picture"),
        ("16505559876", "[removed]"),
        ("16505554321", "[removed]"),
        ("16505551234", "[left]"),
        ("business", "[group_suspend]"),
    ]
    console = Console(width=200, record=True, markup=False, highlight=False)  # as stdout_console prints
    console.print(group_table(timeline))
    table = console.export_text()
    assert "What do you all think about this?" in table
    assert "[left]" in table
