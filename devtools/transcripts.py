"""A synthetic conversation for the PDF transcripts' tests and benchmark: ``count`` messages alternating between
a person and the business, with statuses, one deleted message, one edited, one image and one document (the
messages as services/review/assembly.py assembles them), and the header and media files of its export."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from services.evidence.header import Custodian, ExportHeader, MediaFiles
from services.review.assembly import Change, ConversationMessage

START = 1_767_225_600  # 2026-01-01T00:00:00Z
DELETED_TEXT = "Le contrat est annulé, n'en parle à personne"
EDITED_ORIGINAL = "Rendez-vous à 14h"
EDITED_NEW = "Rendez-vous à 16h"
PERSON = "Camille Dupont"
BUSINESS = "Acme Support +33 1 23 45 67 89"


def event_id(index: int) -> str:
    return hashlib.sha256(f"event-{index}".encode()).hexdigest()[:32]


def conversation(count: int, *, image: Path | None = None) -> list[ConversationMessage]:
    """``count`` messages, a minute apart; message 1 is deleted by the customer 90 s after it was sent, message 2
    edited twice, message 3 an image (with the file ``image`` when given), message 4 a PDF document."""
    messages = []
    for index in range(count):
        inbound = index % 2 == 0
        sent = START + 60 * index
        payload: dict[str, object] = {
            "from": "33612345678" if inbound else "15550001111",
            "id": f"wamid.{index}",
            "timestamp": str(sent),
            "type": "text",
            "text": {"body": f"Message number {index}: the order is on its way 🚚"},
        }
        message = ConversationMessage(
            event_id=event_id(index),
            message_id=f"wamid.{index}",
            kind="message" if inbound else "echo",
            type="text",
            direction="inbound" if inbound else "outbound",
            timestamp=sent,
            received_at=datetime.fromtimestamp(sent, UTC).isoformat(),
            payload=payload,
        )
        if not inbound:
            message.statuses = [("sent", sent + 1), ("delivered", sent + 2), ("read", sent + 30)]
        if index == 1:
            payload["text"] = {"body": DELETED_TEXT}
            message.deletion = Change(event_id(count + 1), "revoke", "customer", sent + 90, None)
        elif index == 2:
            payload["text"] = {"body": EDITED_ORIGINAL}
            message.edits = [
                Change(event_id(count + 2), "edit", "customer", sent + 30, _edit("Rendez-vous à 15h")),
                Change(event_id(count + 3), "edit", "customer", sent + 45, _edit(EDITED_NEW)),
            ]
        elif index == 3:
            payload["type"] = message.type = "image"
            payload.pop("text")
            payload["image"] = {"caption": "Photo du colis", "mime_type": "image/png", "id": "media-3"}
            message.media = {"event_id": message.event_id, "status": "archived", "mime_type": "image/png"}
        elif index == 4:
            payload["type"] = message.type = "document"
            payload.pop("text")
            payload["document"] = {"filename": "facture-2026.pdf", "mime_type": "application/pdf", "id": "media-4"}
            message.media = {"event_id": message.event_id, "status": "archived", "size_bytes": 2048}
        messages.append(message)
    return messages


def _edit(body: str) -> dict[str, object]:
    return {"edit": {"message": {"type": "text", "text": {"body": body}}}}


def header(
    *, language: Literal["en", "fr"] = "en", export_id: str = "EXP-2026-0042", time_zone: str = "Europe/Paris"
) -> ExportHeader:
    return ExportHeader(
        scope="conversation",
        title=f"Conversation with {PERSON}",
        export_id=export_id,
        custodians=(
            Custodian(kind="person", label=PERSON, ref="a" * 64),
            Custodian(kind="business", label=BUSINESS, ref="1555000111"),
        ),
        period_start=datetime(2026, 1, 1, tzinfo=UTC),
        period_end=datetime(2026, 2, 1, tzinfo=UTC),
        time_zone=time_zone,
        language=language,
        requested_by="dpo@example.com",
        reason="Litige client n° 42",
        generated_at=datetime(2026, 2, 2, 9, 30, tzinfo=UTC),
        case_ref="CASE-42",
    )


def media_files(root: Path, messages: list[ConversationMessage], image_bytes: bytes) -> MediaFiles:
    """The media of ``messages`` written under ``root``: the image (``image_bytes``) for message 3, a small PDF
    stand-in for message 4."""
    by_event = {}
    for message in messages[3:5]:
        name = f"{message.event_id}.{'png' if message.type == 'image' else 'pdf'}"
        (root / name).write_bytes(image_bytes if message.type == "image" else b"%PDF-1.4 stand-in\n" * 100)
        by_event[message.event_id] = Path(name)
    return MediaFiles(root, by_event)
