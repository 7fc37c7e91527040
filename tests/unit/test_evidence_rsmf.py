"""RSMF 2.0 (services/evidence/rsmf.py): the mapping of a conversation (deletions, edits, reactions, receipts,
media, groups, unreadable records) to the manifest, the EML around it, and a property: any timeline the read side
assembles gives a manifest that the vendored schema accepts and whose references all resolve."""

from __future__ import annotations

import email
import io
import zipfile
from datetime import UTC, datetime
from email.policy import default
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.evidence.header import Custodian, ExportHeader, MediaFiles
from services.evidence.rsmf import iso, manifest_schema, rsmf_manifest, write_rsmf
from services.review.assembly import ConversationMessage, assemble

PERSON = "33612345678"
OTHER = "33698765432"
GROUP = "Y2FwaV9ncm91cDoxMjM"
HEADER = ExportHeader(
    scope="subject_access",
    title="WhatsApp messages of +33 6 12 34 56 78",
    export_id="SAR-42",
    custodians=(Custodian(kind="person", label=PERSON, ref="a" * 64),),
    period_start=None,
    period_end=None,
    time_zone="UTC",
    language="en",
    requested_by="dpo",
    reason="Art. 15 request",
    generated_at=datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
)
VALIDATOR = jsonschema.Draft7Validator(manifest_schema(), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def envelope(
    event_id: str,
    kind: str,
    kind_type: str | None,
    timestamp: int | None,
    payload: Any,
    *,
    message_id: str | None = None,
    original: str | None = None,
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "kind": kind,
        "type": kind_type,
        "timestamp": timestamp,
        "received_at": "2026-11-25T10:00:00.000Z",
        "message_id": message_id,
        "original_message_id": original,
        "payload": payload,
        "subject": {"wa_id": PERSON, "user_id": None},
    }


def text(sender: str, body: str, **extra: Any) -> dict[str, Any]:
    return {"from": sender, "type": "text", "text": {"body": body}, **extra}


def reaction(sender: str, target: str, emoji: str) -> dict[str, Any]:
    return {"from": sender, "type": "reaction", "reaction": {"message_id": target, "emoji": emoji}}


def crisis() -> list[ConversationMessage]:
    """A message edited then deleted by the customer; the business's answer, read and reacted to (a reaction
    then taken back, another kept); a reaction to a message the archive does not hold; a photo; a group message;
    a record that could not be read."""
    envelopes = [
        envelope("e01", "message", "text", 1000, text(PERSON, "the invoice is wrong"), message_id="wamid.1"),
        envelope(
            "e02",
            "outbound",
            "text",
            1010,
            {"request": {"to": PERSON, "type": "text", "text": {"body": "we will check"}}},
            message_id="wamid.2",
        ),
        envelope("e03", "status", "delivered", 1015, {"status": "delivered"}, message_id="wamid.2"),
        envelope("e04", "status", "read", 1020, {"status": "read"}, message_id="wamid.2"),
        envelope(
            "e05",
            "message",
            "edit",
            1030,
            {"from": PERSON, "type": "edit", "edit": {"message": {"type": "text", "text": {"body": "it is fine"}}}},
            original="wamid.1",
        ),
        envelope("e06", "message", "revoke", 1040, {"from": PERSON, "type": "revoke"}, original="wamid.1"),
        envelope("e07", "message", "reaction", 1050, reaction(PERSON, "wamid.2", "😡"), message_id="wamid.7"),
        envelope("e08", "message", "reaction", 1055, reaction(PERSON, "wamid.2", ""), message_id="wamid.8"),
        envelope("e09", "message", "reaction", 1056, reaction(PERSON, "wamid.2", "👍"), message_id="wamid.9"),
        envelope("e10", "message", "reaction", 1060, reaction(PERSON, "wamid.gone", "❤️"), message_id="wamid.10"),
        envelope(
            "e11",
            "message",
            "image",
            1070,
            {"from": PERSON, "type": "image", "image": {"caption": "the invoice", "mime_type": "image/png"}},
            message_id="wamid.11",
        ),
        envelope("e12", "message", "text", 1080, text(PERSON, "hello group", group_id=GROUP), message_id="wamid.12"),
    ]
    unreadable = ConversationMessage(
        event_id="e13",
        message_id=None,
        kind="message",
        type="text",
        direction="inbound",
        timestamp=1090,
        received_at="2026-11-25T10:00:00.000Z",
        payload=None,
        unreadable="not UTF-8",
    )
    return assemble(envelopes, unreadable=[unreadable])


@pytest.fixture
def media(tmp_path: Path) -> MediaFiles:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "e11.png").write_bytes(b"\x89PNG fake image")
    return MediaFiles(tmp_path, {"e11": Path("media/e11.png")})


def by_id(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {event["id"]: event for event in manifest["events"]}


def custom(event: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in event.get("custom", [])}


def test_the_crisis_maps_to_a_valid_manifest(media: MediaFiles) -> None:
    package = rsmf_manifest(crisis(), HEADER, media, names={PERSON: "Léa"})
    VALIDATOR.validate(package.manifest)
    events = by_id(package.manifest)
    # Reactions to a message of the export are drawn on it, not as events; the one to an unknown message stays.
    assert sorted(events) == ["e01", "e02", "e10", "e11", "e12", "e13"]
    assert package.manifest["eventcollectionid"] == "SAR-42"
    assert package.manifest["participants"] == [
        {"id": "business", "display": "Business"},
        {"id": f"person:{PERSON}", "display": "Léa", "account_id": PERSON},
    ]


def test_a_deleted_and_edited_message_keeps_its_content_its_edits_and_who_deleted_it(media: MediaFiles) -> None:
    deleted = by_id(rsmf_manifest(crisis(), HEADER, media).manifest)["e01"]
    assert deleted["deleted"] is True
    assert deleted["body"] == "it is fine"  # its last version
    assert deleted["edits"] == [
        {
            "participant": f"person:{PERSON}",
            "timestamp": iso(1030),
            "previous": "the invoice is wrong",
            "new": "it is fine",
        }
    ]
    assert custom(deleted) | {"Event ID": "e01"} == {
        "Event ID": "e01",
        "Kind": "message",
        "Type": "text",
        "Message ID": "wamid.1",
        "Deleted by": "customer",
        "Deleted at": iso(1040),
        "Deleted for everyone": "yes",
        "Original content": "the invoice is wrong",
    }
    assert deleted["direction"] == "incoming"
    assert deleted["timestamp"] == "1970-01-01T00:16:40Z"


def test_reactions_go_into_their_message_latest_emoji_per_participant(media: MediaFiles) -> None:
    events = by_id(rsmf_manifest(crisis(), HEADER, media).manifest)
    answer = events["e02"]
    assert answer["participant"] == "business"
    assert answer["direction"] == "outgoing"
    # 😡 was taken back (an empty emoji), 👍 stays.
    assert answer["reactions"] == [{"value": "👍", "count": 1, "participants": [f"person:{PERSON}"]}]
    assert answer["read_receipts"] == [
        {"participant": f"person:{PERSON}", "timestamp": iso(1015), "action": "delivered"},
        {"participant": f"person:{PERSON}", "timestamp": iso(1020), "action": "read"},
    ]
    orphan = events["e10"]
    assert orphan["body"] == "[reaction] ❤️"
    assert custom(orphan)["Reacts to"] == "wamid.gone"


def test_media_groups_and_unreadable_records(media: MediaFiles) -> None:
    package = rsmf_manifest(crisis(), HEADER, media)
    events = by_id(package.manifest)
    assert events["e11"]["attachments"] == [{"id": "e11.png", "display": "e11.png", "size": 15}]
    assert package.attachments == {"e11.png": media.root / "media" / "e11.png"}
    assert events["e11"]["body"] == "[image] the invoice"
    conversations = {c["id"]: c for c in package.manifest["conversations"]}
    assert conversations[f"group:{GROUP}"]["type"] == "channel"
    assert conversations[f"group:{GROUP}"]["participants"] == ["business", f"person:{PERSON}"]
    assert conversations[f"direct:{PERSON}"]["type"] == "direct"
    assert events["e12"]["conversation"] == f"group:{GROUP}"
    assert events["e13"]["type"] == "unknown"
    assert "could not be read: not UTF-8" in events["e13"]["body"]
    assert custom(events["e13"])["Unreadable"] == "not UTF-8"


def test_the_eml_carries_the_headers_and_the_zip(media: MediaFiles, tmp_path: Path) -> None:
    package = rsmf_manifest(crisis(), HEADER, media)
    path = write_rsmf(package, HEADER, tmp_path / "export.rsmf")
    assert not list(tmp_path.glob("*.partial"))  # the zip it built is removed
    message = email.message_from_bytes(path.read_bytes(), policy=default)
    assert message["X-RSMF-Version"] == "2.0.0"
    assert message["X-RSMF-EventCount"] == "6"
    assert message["X-RSMF-AttachmentCount"] == "1"
    assert message["X-RSMF-BeginDate"] == iso(1000)
    assert message["X-RSMF-EndDate"] == iso(1090)
    assert message["X-RSMF-EventCollectionID"] == "SAR-42"
    assert message["X-RSMF-Generator"] == "wa-archive"
    assert message["Subject"] == HEADER.title
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_filename() == "rsmf.zip"
    with zipfile.ZipFile(io.BytesIO(attachment.get_content())) as archive:
        assert sorted(archive.namelist()) == ["e11.png", "rsmf_manifest.json"]
        assert archive.read("e11.png") == b"\x89PNG fake image"
        VALIDATOR.validate(__import__("json").loads(archive.read("rsmf_manifest.json")))


def test_a_large_attachment_is_encoded_in_lines_of_76(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    blob = bytes(range(256)) * 1000  # 256,000 bytes: several reads of the encoder
    (tmp_path / "media" / "e1.bin").write_bytes(blob)
    messages = assemble([envelope("e1", "message", "document", 5, {"from": PERSON, "type": "document"})])
    package = rsmf_manifest(messages, HEADER, MediaFiles(tmp_path, {"e1": Path("media/e1.bin")}))
    raw = write_rsmf(package, HEADER, tmp_path / "big.rsmf").read_bytes()
    body_lines = raw.split(b"\r\n\r\n")[-1].split(b"\r\n")
    assert max(len(line) for line in body_lines) <= 76
    (attachment,) = list(email.message_from_bytes(raw, policy=default).iter_attachments())
    with zipfile.ZipFile(io.BytesIO(attachment.get_content())) as archive:
        assert archive.read("e1.bin") == blob


# Any JSON where a payload's fields are: the mapping must not care what shape the sender gave them.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
ids = st.sampled_from(["wamid.1", "wamid.2", "wamid.3", None])
people = st.sampled_from([PERSON, OTHER, "", None])
payloads = st.one_of(
    st.builds(text, people, st.text(max_size=12)),
    st.builds(reaction, people, st.sampled_from(["wamid.1", "wamid.2", "wamid.9"]), st.sampled_from(["👍", "", "x"])),
    st.builds(lambda who, body: text(who, body, group_id=GROUP), people, st.text(max_size=6)),
    st.builds(lambda body: {"request": {"to": PERSON, "type": "text", "text": {"body": body}}}, st.text(max_size=6)),
    st.builds(
        lambda new: {"type": "edit", "edit": {"message": {"type": "text", "text": {"body": new}}}}, st.text(max_size=6)
    ),
    st.fixed_dictionaries({"added_participants": st.lists(st.fixed_dictionaries({"wa_id": people}), max_size=2)}),
    json_values,
)
envelopes = st.builds(
    envelope,
    st.uuids().map(lambda u: u.hex),
    st.sampled_from(["message", "echo", "outbound", "history", "status", "group_participant", "call", "group"]),
    st.sampled_from(["text", "edit", "revoke", "reaction", "image", "read", "deleted", "group_participants_add", None]),
    st.none() | st.integers(min_value=0, max_value=4_000_000_000),
    payloads,
    message_id=ids,
    original=ids,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(envelopes, max_size=12))
def test_any_assembled_timeline_gives_a_valid_manifest_whose_references_resolve(
    batch: list[dict[str, Any]],
) -> None:
    manifest = rsmf_manifest(assemble(batch), HEADER, MediaFiles(Path("/nonexistent"))).manifest
    VALIDATOR.validate(manifest)
    participants = {p["id"] for p in manifest["participants"]}
    conversations = {c["id"]: c for c in manifest["conversations"]}
    assert len(participants) == len(manifest["participants"])
    for conversation in conversations.values():
        assert set(conversation["participants"]) <= participants
        assert conversation["custodian"] in conversation["participants"]
    for event in manifest["events"]:
        assert event["conversation"] in conversations
        assert event.get("participant", "business") in participants
        for reacted in event.get("reactions", []):
            assert set(reacted["participants"]) <= participants
        for edit in event.get("edits", []):
            assert edit["participant"] in participants
