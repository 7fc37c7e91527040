"""RSMF 2.0 (Relativity Short Message Format): what eDiscovery platforms import.

An RSMF file is an EML (RFC 5322, MIME) whose headers say what it holds (``X-RSMF-Version: 2.0.0``, the first and
last event's dates, the event count, the generator…) and whose attachment ``rsmf.zip`` holds
``rsmf_manifest.json`` and the files the events attach. The manifest's JSON Schema is vendored beside this module
(``schemas/rsmf_schema_2_0_0.json``, from relativitydev/rsmf-validator-samples, BSD-3: ``schemas/LICENSE.rsmf-schema``).

The mapping (:func:`rsmf_manifest`, pure but for the sizes of the media files it attaches):

- **participants**: the business number (``business``), each person by their WhatsApp id (``person:<wa_id>``; a
  business-scoped user id when that is all there is), named by ``names`` (profile names) or else by their id;
- **conversations**: one per group (``channel``) and one per person the business wrote with (``direct``), each with
  the business as its custodian (the archive is the business's: ``direction`` is ``outgoing`` for what it sent);
- **events**: messages (``message``), participants joining and leaving a group (``join`` / ``leave``), anything
  else and records that could not be read (``unknown``), each with its time, sender, body and custom fields (event
  id, kind, type, delivery status). A deleted message keeps its content and gets ``deleted: true`` with who deleted
  it, when, and that it was deleted for everyone (``custom``); an edited message's body is its last version and
  ``edits[]`` says each change (previous, new, when); a reaction goes into the message it reacts to (the latest
  emoji of each participant; an empty emoji takes theirs back), or stays an event of its own when that message is
  not in the export; a medium is an attachment (``media`` names its file).

:func:`write_rsmf` writes the EML: the zip built on disk (media copied in by the zip writer, in pieces) and
base64-encoded into the EML in pieces, so no medium is held whole in memory.

The manifest names people (numbers, profile names) and quotes their messages: it is written only into the export.
"""

from __future__ import annotations

import base64
import json
import uuid
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from importlib import resources
from pathlib import Path
from typing import Any, Final

from services.core.vocabulary import MESSAGE_KINDS
from services.evidence.header import ExportHeader, MediaFiles
from services.review.assembly import ConversationMessage
from services.review.display import Content, Display, display, message_object

RSMF_VERSION: Final = "2.0.0"
GENERATOR: Final = "wa-archive"
APPLICATION: Final = "WhatsApp Business"
PLATFORM: Final = "whatsapp"
BUSINESS: Final = "business"
SCHEMA_FILE: Final = "rsmf_schema_2_0_0.json"
# base64 of 57 bytes is one 76-character line (RFC 2045's limit); 57 * 1024 bytes per read keeps lines whole.
_B64_READ: Final = 57 * 1024
_B64_LINE: Final = 76


def manifest_schema() -> dict[str, Any]:
    """The vendored RSMF 2.0.0 JSON Schema (draft-07) that ``rsmf_manifest.json`` follows."""
    text = resources.files("services.evidence").joinpath("schemas", SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@dataclass(frozen=True, slots=True)
class RsmfPackage:
    """A manifest and the files it attaches: name in ``rsmf.zip`` → the file on disk."""

    manifest: dict[str, Any]
    attachments: Mapping[str, Path] = field(default_factory=dict)

    @property
    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.manifest["events"]
        return events


def iso(timestamp: int | None, fallback: str = "") -> str:
    """A Unix time as ISO 8601 in UTC (``2026-11-25T10:00:00Z``); ``fallback`` (an archived ISO time) without."""
    if timestamp is None:
        return fallback
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def text_of(content: Content) -> str:
    """A content as the body of an event: its one-line form and its further lines (an address, an order's items)."""
    return "\n".join([content.plain(), *content.lines]) if content.lines else content.plain()


def _payload(message: ConversationMessage) -> dict[str, Any]:
    return message_object(message.kind, message.payload)


def _person_id(value: Any) -> str | None:
    return f"person:{value}" if isinstance(value, str | int) and str(value) else None


def sender_of(message: ConversationMessage) -> str | None:
    """The participant id of who wrote ``message``: the business for what it sent, else the person it names."""
    if message.direction == "outbound":
        return BUSINESS
    payload = _payload(message)
    if message.kind == "group_participant":
        for key in ("added_participants", "removed_participants", "failed_participants"):
            people = payload.get(key)
            if isinstance(people, list) and people and isinstance(people[0], dict):
                return _person_id(people[0].get("wa_id") or people[0].get("user_id") or people[0].get("input"))
    if message.kind == "group":
        return BUSINESS
    return _person_id(payload.get("from") or payload.get("from_user_id") or payload.get("wa_id"))


def group_of(message: ConversationMessage) -> str | None:
    """The Cloud API group a message belongs to, if any (``group_id``; an outbound request to a group names it in
    ``to``)."""
    payload = _payload(message)
    group = payload.get("group_id")
    if isinstance(group, str) and group:
        return group
    if payload.get("recipient_type") == "group" and isinstance(payload.get("to"), str):
        return str(payload["to"])
    return None


def counterpart_of(message: ConversationMessage) -> str | None:
    """The person a direct message was exchanged with: its sender, or whom the business wrote to."""
    if message.direction == "inbound":
        return sender_of(message)
    payload = _payload(message)
    return _person_id(payload.get("to") or payload.get("recipient_id"))


def conversation_id(message: ConversationMessage) -> str:
    group = group_of(message)
    if group is not None:
        return f"group:{group}"
    counterpart = counterpart_of(message)
    return f"direct:{counterpart.removeprefix('person:')}" if counterpart else "direct"


def event_type(message: ConversationMessage) -> str:
    """The RSMF event type (one of the schema's ``events.items.type`` enum, RSMF's words, not the archive's)."""
    if message.unreadable is not None:
        return "unknown"
    if message.kind == "group_participant":
        if message.type == "group_participants_add":
            return "join"
        if message.type == "group_participants_remove":
            return "leave"
        return "unknown"
    if message.kind in MESSAGE_KINDS:
        return "message"
    return "unknown"


def _custom(pairs: Iterable[tuple[str, Any]]) -> list[dict[str, str]]:
    # RSMF custom values are non-empty strings: what is unknown is left out, not written empty.
    return [{"name": name, "value": str(value)} for name, value in pairs if value not in (None, "")]


def _reaction_target(shown: Display) -> str | None:
    return shown.reacts_to if shown.content.type == "reaction" else None


def _reactions(
    messages: Sequence[ConversationMessage], shown: Mapping[str, Display], targets: Mapping[str, str]
) -> dict[str, list[dict[str, Any]]]:
    """The reactions of each message (by event id): per participant, their latest emoji; an empty one removes it."""
    latest: dict[str, dict[str, str]] = {}
    for message in sorted(messages, key=lambda m: (m.timestamp or 0, m.received_at)):
        wamid = _reaction_target(shown[message.event_id])
        if wamid is None or wamid not in targets:
            continue
        who = sender_of(message) or "unknown"
        emojis = latest.setdefault(targets[wamid], {})
        emoji = shown[message.event_id].content.text
        if emoji:
            emojis[who] = emoji
        else:
            emojis.pop(who, None)
    result: dict[str, list[dict[str, Any]]] = {}
    for event_id, by_who in latest.items():
        grouped: dict[str, list[str]] = {}
        for who, emoji in by_who.items():
            grouped.setdefault(emoji, []).append(who)
        if grouped:
            result[event_id] = [
                {"value": emoji, "count": len(who), "participants": sorted(w for w in who if w != "unknown")}
                for emoji, who in sorted(grouped.items())
            ]
    return result


def rsmf_manifest(
    messages: Sequence[ConversationMessage],
    header: ExportHeader,
    media: MediaFiles,
    *,
    names: Mapping[str, str] | None = None,
) -> RsmfPackage:
    """The RSMF 2.0 manifest of ``messages`` (in time order) and the files it attaches (see the module docstring).

    ``names``: profile names by WhatsApp id, for the participants' display. Never raises on a payload of any JSON
    shape (what a message says comes from :func:`services.review.display.display`)."""
    names = names or {}
    shown = {m.event_id: display(m) for m in messages}
    # Reactions name their message by its WhatsApp id; the first message archived under an id is the one shown.
    targets: dict[str, str] = {}
    for message in messages:
        if message.message_id and message.message_id not in targets and event_type(message) == "message":
            targets[message.message_id] = message.event_id
    reactions = _reactions(messages, shown, targets)
    business_label = next((c.label for c in header.custodians if c.kind == "business"), "")
    participants: dict[str, dict[str, Any]] = {BUSINESS: {"id": BUSINESS, "display": business_label or "Business"}}
    conversations: dict[str, dict[str, Any]] = {}
    events: list[dict[str, Any]] = []
    attachments: dict[str, Path] = {}

    def participant(pid: str | None) -> str | None:
        if pid is not None and pid not in participants:
            number = pid.removeprefix("person:")
            participants[pid] = {"id": pid, "display": names.get(number) or number, "account_id": number}
        return pid

    for message in messages:
        view = shown[message.event_id]
        wamid = _reaction_target(view)
        if wamid is not None and wamid in targets:
            participant(sender_of(message))  # who reacted is a participant, named in the message's reactions
            continue  # drawn on the message it reacts to
        cid = conversation_id(message)
        sender = participant(sender_of(message))
        conversation = conversations.get(cid)
        if conversation is None:
            group = group_of(message)
            display_name = (
                f"WhatsApp group {group}"
                if group
                else f"WhatsApp with {participants[sender]['display']}"
                if sender and sender != BUSINESS
                else "WhatsApp"
            )
            conversation = conversations[cid] = {
                "id": cid,
                "display": display_name,
                "platform": PLATFORM,
                "type": "channel" if group else "direct",
                "participants": [BUSINESS],
                "custodian": BUSINESS,
            }
        counterpart = participant(counterpart_of(message)) if cid.startswith("direct:") else None
        for pid in (sender, counterpart):
            if pid is not None and pid not in conversation["participants"]:
                conversation["participants"].append(pid)
        event: dict[str, Any] = {
            "id": message.event_id,
            "type": event_type(message),
            "conversation": cid,
            "timestamp": iso(message.timestamp, message.received_at),
            "direction": "outgoing" if message.direction == "outbound" else "incoming",
            "body": view.plain() if message.unreadable is not None else text_of(view.content),
        }
        if sender is not None:
            event["participant"] = sender
        if not event["timestamp"]:
            del event["timestamp"]
        if view.history:
            event["edits"] = [
                {
                    "participant": sender or BUSINESS,
                    "timestamp": iso(after.at, event.get("timestamp", "")),
                    "previous": text_of(before.content),
                    "new": text_of(after.content),
                }
                for before, after in zip(view.history, view.history[1:], strict=False)
            ]
            for edit in event["edits"]:
                if not edit["timestamp"]:
                    del edit["timestamp"]
        deletion = message.deletion
        if deletion is not None:
            event["deleted"] = True
        if message.event_id in reactions:
            event["reactions"] = reactions[message.event_id]
        if counterpart is not None and message.direction == "outbound":
            receipts = [
                {"participant": counterpart, "timestamp": iso(at), "action": status}
                for status, at in message.statuses
                if status in ("read", "delivered") and at is not None
            ]
            if receipts:
                event["read_receipts"] = receipts
        path = media.path(message.event_id)
        if path is not None:
            name = path.name
            attachments[name] = path
            size = path.stat().st_size if path.exists() else None
            attached: dict[str, Any] = {"id": name, "display": view.content.label or name}
            if size is not None:
                attached["size"] = size
            event["attachments"] = [attached]
        event["custom"] = _custom(
            [
                ("Event ID", message.event_id),
                ("Kind", message.kind),
                ("Type", message.type),
                ("Message ID", message.message_id),
                ("Delivery status", message.latest_status),
                ("Reacts to", wamid),
                ("Quotes", view.quotes),
                ("Deleted by", deletion.by if deletion else None),
                ("Deleted at", iso(deletion.at) if deletion and deletion.at is not None else None),
                ("Deleted for everyone", "yes" if deletion else None),  # WhatsApp reports no other deletion
                ("Original content", text_of(view.original) if deletion and view.history else None),
                ("Unreadable", message.unreadable),
            ]
        )
        events.append(event)
    manifest = {
        "version": RSMF_VERSION,
        "participants": list(participants.values()),
        "conversations": list(conversations.values()),
        "events": events,
        "eventcollectionid": header.export_id,
    }
    return RsmfPackage(manifest, attachments)


def rsmf_headers(package: RsmfPackage, header: ExportHeader) -> dict[str, str]:
    """The X-RSMF headers of the EML: version, generator, first and last event dates, counts, application,
    custodian, participants and the event collection id (the export's id)."""
    times = sorted(e["timestamp"] for e in package.events if "timestamp" in e)
    participants = package.manifest["participants"]
    headers = {
        "X-RSMF-Version": RSMF_VERSION,
        "X-RSMF-Generator": GENERATOR,
        "X-RSMF-EventCount": str(len(package.events)),
        "X-RSMF-Application": APPLICATION,
        "X-RSMF-Custodian": ", ".join(c.label for c in header.custodians) or "Business",
        "X-RSMF-Participants": ", ".join(str(p.get("display") or p["id"]) for p in participants),
        "X-RSMF-AttachmentCount": str(sum(len(e.get("attachments", ())) for e in package.events)),
        "X-RSMF-EventCollectionID": header.export_id,
    }
    if times:
        headers["X-RSMF-BeginDate"] = times[0]
        headers["X-RSMF-EndDate"] = times[-1]
    return headers


def write_rsmf_zip(package: RsmfPackage, path: Path) -> None:
    """``rsmf.zip``: the manifest (deflated) and the attachments (stored: media are compressed already), each file
    copied in pieces by the zip writer."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        manifest = json.dumps(package.manifest, ensure_ascii=False, indent=1).encode()
        archive.writestr("rsmf_manifest.json", manifest, compress_type=zipfile.ZIP_DEFLATED)
        for name, source in sorted(package.attachments.items()):
            if source.exists():
                archive.write(source, name)


def write_rsmf(package: RsmfPackage, header: ExportHeader, path: Path) -> Path:
    """Write the RSMF file (an EML) at ``path``: the X-RSMF headers, a short text part and ``rsmf.zip`` in base64.
    The zip is built next to ``path`` and removed once encoded; what the file system raises propagates."""
    zip_path = path.with_name(path.name + ".zip.partial")
    write_rsmf_zip(package, zip_path)
    boundary = f"=_rsmf_{uuid.uuid4().hex}"
    head = EmailMessage(policy=SMTP)
    head["From"] = Address(display_name=GENERATOR, addr_spec="export@wa-archive.invalid")
    head["To"] = ", ".join(
        str(Address(display_name=c.label or c.ref, addr_spec="custodian@wa-archive.invalid")) for c in header.custodians
    ) or str(Address(display_name="Business", addr_spec="custodian@wa-archive.invalid"))
    head["Subject"] = header.title
    head["Date"] = header.generated_at
    for name, value in rsmf_headers(package, header).items():
        head[name] = value
    head["MIME-Version"] = "1.0"
    head["Content-Type"] = f'multipart/mixed; boundary="{boundary}"'
    text = EmailMessage(policy=SMTP)
    text.set_content(
        f"{header.title}\r\nExport {header.export_id}, requested by {header.requested_by}: {header.reason}\r\n"
        f"{len(package.events)} event(s); the conversation is in the attached rsmf.zip (RSMF {RSMF_VERSION}).\r\n"
    )
    attachment = EmailMessage(policy=SMTP)
    attachment["Content-Type"] = 'application/zip; name="rsmf.zip"'
    attachment["Content-Disposition"] = 'attachment; filename="rsmf.zip"'
    attachment["Content-Transfer-Encoding"] = "base64"
    delimiter = f"--{boundary}\r\n".encode()
    try:
        with path.open("wb") as out, zip_path.open("rb") as source:
            # The headers alone: the generator would write an empty multipart body after them.
            out.write(b"".join(SMTP.fold_binary(name, value) for name, value in head.items()) + b"\r\n")
            out.write(delimiter)
            out.write(text.as_bytes())
            out.write(b"\r\n" + delimiter)
            out.write(attachment.as_bytes())
            while chunk := source.read(_B64_READ):
                encoded = base64.b64encode(chunk)
                out.write(b"".join(encoded[i : i + _B64_LINE] + b"\r\n" for i in range(0, len(encoded), _B64_LINE)))
            out.write(f"\r\n--{boundary}--\r\n".encode())
    finally:
        zip_path.unlink(missing_ok=True)
    return path
