"""Subject access and portability (GDPR Art. 15 and 20): a person's messages as JSON and as a readable HTML page.

Only the person's own records are exported: every record was sealed under one of their pseudonyms, so other
customers' data never enters the export; the delivery evidence (hash and signature of Meta's POST, which may
have carried other people's updates) is left out.

The export shows each record as the read side decodes it (services/core/plaintext.py): a lone surrogate of the
archived JSON is U+FFFD here, and a record that could not be read is listed with its metadata and ``unreadable``
(why), in its place among the others, never left out in silence.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.core.plaintext import json_bytes
from services.review.assembly import ConversationMessage
from services.review.display import display


def export_document(
    messages: Sequence[ConversationMessage], *, request_ref: str | None, generated_at: datetime
) -> dict[str, Any]:
    return {
        "format": "wa-archive-subject-export/1",
        "generated_at": generated_at.isoformat(),
        "request_ref": request_ref,
        "message_count": len(messages),
        "messages": [m.to_json() for m in messages],
    }


def render_html(messages: Sequence[ConversationMessage], *, title: str) -> str:
    rows = []
    for message in messages:
        shown = display(message)
        when = (
            datetime.fromtimestamp(message.timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            if message.timestamp
            else message.received_at
        )
        notes: list[str] = []
        notes.extend(f"edited: {html.escape(edit.content.plain())}" for edit in shown.edits)
        if message.deletion is not None:
            notes.append(f"deleted by the {html.escape(message.deletion.by)}")
        side = "you" if message.direction == "inbound" else "business"
        rows.append(
            f'<tr class="{side}"><td>{html.escape(when)}</td><td>{side}</td>'
            f"<td>{html.escape(shown.plain())}</td><td>{html.escape(message.latest_status or '')}</td>"
            f"<td>{'<br>'.join(notes)}</td></tr>"
        )
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}td{padding:4px 8px;vertical-align:top}"
        "tr.you{background:#eef}tr.business{background:#efe}</style>"
        f"<h1>{html.escape(title)}</h1><table><tr><th>When</th><th>From</th><th>Message</th><th>Status</th>"
        f"<th>Changes</th></tr>{''.join(rows)}</table></html>"
    )


def write_export(
    messages: Sequence[ConversationMessage],
    out_dir: Path,
    *,
    formats: Sequence[str],
    request_ref: str | None,
    now: datetime | None = None,
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    generated_at = now or datetime.now(UTC)
    stem = f"subject-export-{(request_ref or generated_at.strftime('%Y%m%dT%H%M%S')).replace('/', '_')}"
    written = []
    if "json" in formats:
        path = out_dir / f"{stem}.json"
        document = export_document(messages, request_ref=request_ref, generated_at=generated_at)
        path.write_bytes(json_bytes(document, indent=True))
        written.append(path)
    if "html" in formats:
        path = out_dir / f"{stem}.html"
        path.write_text(render_html(messages, title="Your WhatsApp messages with us"), encoding="utf-8")
        written.append(path)
    return written
