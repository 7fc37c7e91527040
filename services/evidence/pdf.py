"""PDF transcripts: a conversation, a search result or a case as a document a court, a lawyer or the person can read.

A transcript opens with its header (case, scope, custodians, period, time zone, who asked and why), then lists the
messages in time order, each with its direction, the sender's name, its time in the header's time zone and its
delivery status; a deleted message keeps its original content under a DELETED mark with who deleted it and when, an
edited one lists its original and every edit with their times; images are drawn as thumbnails and every media file
is named with its size and sha256, so the reader can match it with the file handed over beside the PDF. Every page
carries "page N of M" and a running document number ``<export_id>-<volume>-<page>``.

WeasyPrint's cost grows faster than the message count (about 11 s and 186 MiB for 1,000 messages, 127 s and
800 MiB for 10,000 here), so :func:`write_pdf` splits the messages into volumes (:func:`plan_volumes`) and renders
each in a child process of its own (services/evidence/pdf_worker.py) with an address-space limit: the messages go
to the child as a JSON Lines file, and a volume that fails or runs out of memory raises :class:`VolumeFailed`
naming it. Only the orchestration here does I/O; the HTML of a volume (:func:`transcript_html`) is pure.

Everything a message, a header or a file name says is hostile input: it is escaped for HTML (and for CSS where it
goes into a page's margin box), and characters no document may hold (controls, lone surrogates) read U+FFFD. The
PDF holds personal data: nothing of it is logged.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_datetime, format_timedelta, get_timezone_gmt
from babel.numbers import format_decimal

import services
from services.evidence.header import Custodian, ExportHeader, MediaFiles
from services.evidence.pdf_text import Language, plural, text
from services.review.assembly import Change, ConversationMessage
from services.review.display import Content, Display, display

# 500 messages (about 24 A4 pages) render in about 4 s and stay near 145 MiB of RSS here, 1,000 in 7.5 s and
# 172 MiB: far from the superlinear growth of a large document, and a volume a reader can still page through.
DEFAULT_MESSAGES_PER_VOLUME: Final = 500
# An address-space limit (RLIMIT_AS), not RSS: Python, Pango's threads and the mapped fonts reserve more address
# space than they touch (a 500-message volume peaks near 440 MiB of address space for 145 MiB resident), so the
# limit leaves that room, and large images to draw, and still stops a runaway volume long before the machine's
# memory. Below about 250 MiB not even WeasyPrint starts.
DEFAULT_MEMORY_LIMIT_BYTES: Final = 768 * 1024 * 1024
DEFAULT_VOLUME_TIMEOUT_S: Final = 900.0
THUMBNAIL_PIXELS: Final = 480  # the longest side of a thumbnail: sharp at 60 mm, small in the PDF
DRAWN_IMAGE_TYPES: Final = frozenset({"image", "sticker"})
# How a volume's child process (services/evidence/pdf_worker.py) says it ran out of memory, and how its one line of
# stderr starts.
MEMORY_EXIT_CODE: Final = 3
VERDICT_PREFIX: Final = "pdf volume: "


class VolumeFailed(RuntimeError):
    """A volume could not be rendered: its child process failed, exceeded its memory limit or its time."""

    def __init__(self, volume: int, volumes: int, why: str) -> None:
        super().__init__(f"PDF volume {volume} of {volumes} failed: {why}")
        self.volume = volume


# ---------------------------------------------------------------------------------------------------- volumes


@dataclass(frozen=True, slots=True)
class VolumePlan:
    """One volume: its number (from 1) and the slice of the messages it holds (``first`` from 0)."""

    number: int
    first: int
    count: int


def plan_volumes(total: int, per_volume: int) -> list[VolumePlan]:
    """Split ``total`` messages into volumes of at most ``per_volume``, in order; an empty transcript is one empty
    volume (its header still says what was exported). ValueError when ``per_volume`` < 1 or ``total`` < 0."""
    if per_volume < 1:
        raise ValueError(f"messages per volume must be at least 1, not {per_volume}")
    if total < 0:
        raise ValueError(f"a message count cannot be negative ({total})")
    if total == 0:
        return [VolumePlan(1, 0, 0)]
    return [
        VolumePlan(number, first, min(per_volume, total - first))
        for number, first in enumerate(range(0, total, per_volume), start=1)
    ]


# ---------------------------------------------------------------------------------------------------- text

# C0 and C1 controls (tab and newline kept), lone surrogates and the two non-characters: none may be in a document.
_FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def clean(value: str) -> str:
    """``value`` with every character a document may not hold replaced by U+FFFD (carriage returns too)."""
    return _FORBIDDEN.sub("\ufffd", value)


def esc(value: object) -> str:
    """Any value as HTML text: cleaned, then escaped (quotes included, so it is safe in an attribute too)."""
    return html.escape(clean(str(value)), quote=True)


def css_string(value: str) -> str:
    """``value`` as a CSS string literal, every character but letters, digits, spaces and a few signs written as a
    hex escape: nothing in it can close the string, the rule or the ``<style>`` element."""
    out = []
    for char in clean(value):
        if char.isascii() and (char.isalnum() or char in " .,:-_()/"):
            out.append(char)
        else:
            out.append(f"\\{ord(char):06x}")
    return '"' + "".join(out) + '"'


_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff]")
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def script_language(value: str) -> str | None:
    """The language a text's CJK script says (``ko`` for Hangul, ``ja`` for kana, ``zh`` for Han alone), so the
    ``:lang()`` rules pick the glyphs its readers expect; None for any other text."""
    if _HANGUL.search(value):
        return "ko"
    if _KANA.search(value):
        return "ja"
    if _HAN.search(value):
        return "zh"
    return None


def time_zone(name: str) -> ZoneInfo:
    """The header's time zone; ValueError naming it when it is not an IANA time zone of this machine."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Paris)") from exc


def format_when(moment: datetime | int | None, zone: ZoneInfo, language: Language) -> str:
    """A moment in the header's time zone, as the language writes it, with its UTC offset (which may change
    within one transcript, at daylight saving time)."""
    if moment is None:
        return text(language, "time_unknown")
    when = datetime.fromtimestamp(moment, UTC) if isinstance(moment, int) else moment
    local = when.astimezone(zone)
    return f"{format_datetime(local, 'medium', locale=language)} {get_timezone_gmt(local, 'long', locale=language)}"


_UNITS: Final[tuple[tuple[Literal["day", "hour", "minute", "second"], int], ...]] = (
    ("day", 86_400),
    ("hour", 3_600),
    ("minute", 60),
    ("second", 1),
)


def duration(seconds: int, language: Language) -> str:
    """A delay in its two largest units, each with its plural form ("1 minute 30 seconds", "2 heures 5 minutes"):
    Babel alone would round 90 s to "2 minutes", and a deletion's delay is evidence."""
    parts: list[str] = []
    rest = max(0, seconds)
    for unit, size in _UNITS:
        amount, rest = divmod(rest, size)
        if amount and len(parts) < 2:
            parts.append(format_timedelta(amount * size, granularity=unit, threshold=1e9, locale=language))
        elif parts:
            break
    return " ".join(parts) or format_timedelta(0, granularity="second", locale=language)


# ---------------------------------------------------------------------------------------------------- media


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaEntry:
    """What a transcript says of a message's media file: its name, size and sha256 when the file is in the export
    (None when it is not), the thumbnail drawn for an image (a file URL), or why it was not drawn."""

    name: str
    size: int | None
    sha256: str | None
    thumbnail: str | None = None
    problem: str | None = None


# ---------------------------------------------------------------------------------------------------- HTML


def sender_name(message: ConversationMessage, header: ExportHeader) -> str:
    """Who wrote a message, as the reader knows them: the business number's label for what the business sent; the
    person's label when the export has one person; else the sender's number as the message gives it; else "the
    business" or "—"."""
    wanted = "business" if message.direction == "outbound" else "person"
    labels = [c.label for c in header.custodians if c.kind == wanted]
    if len(labels) == 1:
        return labels[0]
    sender = message.payload.get("from") if isinstance(message.payload, dict) else None
    if message.direction == "inbound" and isinstance(sender, str) and sender:
        return sender
    if labels:
        return labels[0]
    return text(header.language, "the_business") if message.direction == "outbound" else "—"


def _content_html(content: Content, language: Language) -> str:
    parts = []
    if content.type == "unreadable":
        return f'<div class="unreadable">{esc(text(language, "unreadable", why=content.label))}</div>'
    if content.type != "text":
        parts.append(f'<span class="type">[{esc(content.type)}]</span>')
    for value in (content.text, content.label, *content.lines):
        if value:
            lang = script_language(value)
            attribute = f' lang="{lang}"' if lang else ""
            parts.append(f'<div class="words"{attribute}>{esc(value)}</div>')
    return "".join(parts)


def _deletion_html(deletion: Change, sent_at: int | None, zone: ZoneInfo, language: Language) -> str:
    who = text(language, "deleted_by_business" if deletion.by == "business" else "deleted_by_customer")
    if deletion.at is None:
        when = text(language, "time_unknown")
    elif sent_at is not None and deletion.at >= sent_at:
        delay = duration(deletion.at - sent_at, language)
        when = text(language, "deleted_at", time=format_when(deletion.at, zone, language), delay=delay)
    else:
        when = text(language, "deleted_at_no_delay", time=format_when(deletion.at, zone, language))
    return (
        f'<div class="mark deleted-mark">{esc(who)} {esc(when)}</div>'
        f'<div class="caption">{esc(text(language, "original_content"))}</div>'
    )


def _history_html(shown: Display, zone: ZoneInfo, language: Language) -> str:
    rows = [
        f'<div class="mark edited-mark">{esc(text(language, "edited"))} · '
        f"{esc(plural(language, 'edits', len(shown.edits)))}</div>"
    ]
    for index, revision in enumerate(shown.history):
        when = format_when(revision.at, zone, language)
        caption = text(language, "original_sent" if index == 0 else "edit_at", time=when)
        rows.append(
            f'<div class="revision"><div class="caption">{esc(caption)}</div>'
            f"{_content_html(revision.content, language)}</div>"
        )
    return "".join(rows)


def _media_html(entry: MediaEntry, language: Language) -> str:
    parts = []
    if entry.thumbnail is not None:
        parts.append(f'<img class="thumb" src="{esc(entry.thumbnail)}" alt="{esc(entry.name)}">')
    facts = [entry.name]
    if entry.size is not None:
        facts.append(plural(language, "bytes", entry.size))
    facts.append(f"sha256 {entry.sha256}" if entry.sha256 else text(language, "not_exported"))
    if entry.problem is not None:
        facts.append(text(language, "not_drawn", why=entry.problem))
    parts.append(f'<div class="attachment">{esc(text(language, "attachment", facts=" · ".join(facts)))}</div>')
    return "".join(parts)


_STATUSES: Final = frozenset({"sent", "delivered", "read", "played", "failed", "deleted"})  # translated ones


def message_html(
    message: ConversationMessage,
    header: ExportHeader,
    media: Mapping[str, MediaEntry],
    zone: ZoneInfo,
) -> str:
    """One message of a transcript as an HTML block (pure): direction, sender, time, status, then its content; a
    deletion or edits marked with the original content and their times; its media file named (and drawn)."""
    language = header.language
    shown = display(message)
    facts = [
        text(language, message.direction),
        sender_name(message, header),
        format_when(message.timestamp, zone, language),
    ]
    if shown.status is not None:
        status = text(language, shown.status) if shown.status in _STATUSES else shown.status
        facts.append(text(language, "status", status=status))
    classes = ["message", message.direction]
    body = []
    if shown.deletion is not None:
        classes.append("deleted")
        body.append(_deletion_html(shown.deletion, message.timestamp, zone, language))
    if shown.history:
        classes.append("edited")
        body.append(_history_html(shown, zone, language))
    else:
        body.append(_content_html(shown.content, language))
    if shown.quotes:
        body.append(f'<div class="context">{esc(text(language, "quotes", id=shown.quotes))}</div>')
    if shown.reacts_to:
        body.append(f'<div class="context">{esc(text(language, "reacts_to", id=shown.reacts_to))}</div>')
    entry = media.get(message.event_id)
    if entry is not None:
        body.append(_media_html(entry, language))
    return f'<div class="{" ".join(classes)}"><div class="meta">{esc(" · ".join(facts))}</div>{"".join(body)}</div>'


def _custodian_html(custodian: Custodian, language: Language) -> str:
    return f'<li>{esc(custodian.label)} <span class="muted">({esc(text(language, custodian.kind))})</span></li>'


def header_html(header: ExportHeader, zone: ZoneInfo, *, plan: VolumePlan, volumes: int, total: int) -> str:
    """The header block of a volume (pure): what the export is, for whom, over which period, in which time zone."""
    language = header.language
    if header.period_start is None and header.period_end is None:
        period = text(language, "whole_archive")
    elif header.period_end is None:
        period = text(language, "since", start=format_when(header.period_start, zone, language))
    elif header.period_start is None:
        period = text(language, "until", end=format_when(header.period_end, zone, language))
    else:
        period = (
            f"{format_when(header.period_start, zone, language)} – {format_when(header.period_end, zone, language)}"
        )
    offset = get_timezone_gmt(header.generated_at.astimezone(zone), "long", locale=language)
    scope = text(language, header.scope)
    rows = [
        ("case", header.case_ref or "—"),
        ("scope", scope),
        ("period", period),
        ("time_zone", f"{header.time_zone} ({offset})"),
        ("requested_by", header.requested_by),
        ("reason", header.reason),
        ("generated_at", format_when(header.generated_at, zone, language)),
        ("export_id", header.export_id),
    ]
    table = "".join(f"<tr><th>{esc(text(language, key))}</th><td>{esc(value)}</td></tr>" for key, value in rows)
    custodians = "".join(_custodian_html(c, language) for c in header.custodians) or "<li>—</li>"
    if plan.count:
        first, last, of = (format_decimal(n, locale=language) for n in (plan.first + 1, plan.first + plan.count, total))
        count = plural(language, "volume_messages", plan.count, first=first, last=last, total=of)
    else:
        count = text(language, "no_messages")
    title_lang = script_language(header.title)
    return (
        f"<header><h1{f' lang={title_lang}' if title_lang else ''}>{esc(text(language, 'transcript'))}: "
        f"{esc(header.title)}</h1>"
        f'<p class="volume">{esc(text(language, "volume", volume=plan.number, volumes=volumes))} — {esc(count)}</p>'
        f"<table>{table}<tr><th>{esc(text(language, 'custodians'))}</th><td><ul>{custodians}</ul></td></tr>"
        "</table></header>"
    )


STYLE: Final = """
html { font-family: "DejaVu Sans", sans-serif; font-size: 9pt; color: #111; }
:lang(zh) { font-family: "DejaVu Sans", "Noto Sans CJK SC", sans-serif; }
:lang(ja) { font-family: "DejaVu Sans", "Noto Sans CJK JP", sans-serif; }
:lang(ko) { font-family: "DejaVu Sans", "Noto Sans CJK KR", sans-serif; }
h1 { font-size: 14pt; margin: 0 0 2mm; }
header { border-bottom: 1px solid #999; margin-bottom: 4mm; padding-bottom: 2mm; }
header table { border-collapse: collapse; }
header th { text-align: left; padding: 0.5mm 4mm 0.5mm 0; vertical-align: top; font-weight: bold; }
header td { padding: 0.5mm 0; }
header ul { margin: 0; padding: 0; list-style: none; }
.volume { margin: 0 0 2mm; }
.muted { color: #666; }
.message { margin: 0 0 2.5mm; padding: 1mm 2mm; border-left: 1mm solid #3a6ea5; page-break-inside: avoid; }
.message.outbound { margin-left: 18mm; border-left-color: #2e8b57; background: #f2f8f4; }
.message.inbound { margin-right: 18mm; background: #f3f6fa; }
.message.deleted { border-left-color: #b22222; background: #fbeeee; }
.meta { color: #444; font-size: 7.5pt; margin-bottom: 0.5mm; }
.words { white-space: pre-wrap; overflow-wrap: anywhere; }
.type { color: #666; }
.mark { font-weight: bold; font-size: 8pt; }
.deleted-mark { color: #b22222; }
.edited-mark { color: #a65e00; }
.caption { color: #555; font-size: 7.5pt; }
.revision { margin: 0.5mm 0 0.5mm 3mm; }
.context, .attachment { color: #444; font-size: 7.5pt; overflow-wrap: anywhere; }
.unreadable { color: #b22222; }
img.thumb { display: block; max-width: 60mm; max-height: 60mm; margin: 1mm 0; }
"""


def page_style(header: ExportHeader, plan: VolumePlan, volumes: int) -> str:
    """The page rules of a volume: A4, the title and volume at the top, the document number and "page N of M" at
    the bottom of every page; every text from the header goes in as an escaped CSS string."""
    language = header.language
    page_of = text(language, "page_of", page="\0", pages="\0").split("\0")
    number_prefix = f"{header.export_id}-{plan.number}-"
    title = header.title if len(header.title) <= 90 else header.title[:89] + "…"
    return (
        "@page { size: A4; margin: 18mm 14mm 18mm 14mm;"
        f" @top-left {{ content: {css_string(title)}; font-size: 7.5pt; color: #555; }}"
        f" @top-right {{ content: {css_string(text(language, 'volume', volume=plan.number, volumes=volumes))};"
        " font-size: 7.5pt; color: #555; }"
        f" @bottom-left {{ content: {css_string(number_prefix)} counter(page); font-size: 7.5pt; }}"
        f" @bottom-right {{ content: {css_string(page_of[0])} counter(page) {css_string(page_of[1])}"
        f" counter(pages) {css_string(page_of[2])}; font-size: 7.5pt; }} }}"
    )


def transcript_html(
    messages: Sequence[ConversationMessage],
    header: ExportHeader,
    media: Mapping[str, MediaEntry],
    *,
    plan: VolumePlan,
    volumes: int,
    total: int,
) -> str:
    """The HTML of one volume (pure): ``messages`` are that volume's, in order; ``media`` what to say of each
    message's file, by event id. ValueError when the header's time zone is unknown."""
    zone = time_zone(header.time_zone)
    body = "".join(message_html(m, header, media, zone) for m in messages)
    return (
        f'<!doctype html><html lang="{header.language}"><head><meta charset="utf-8">'
        f"<title>{esc(header.title)}</title><style>{STYLE}{page_style(header, plan, volumes)}</style></head>"
        f"<body>{header_html(header, zone, plan=plan, volumes=volumes, total=total)}<main>{body}</main></body></html>"
    )


# ---------------------------------------------------------------------------------------------------- transport


def message_from_json(value: Mapping[str, Any]) -> ConversationMessage:
    """The inverse of :meth:`ConversationMessage.to_json` for what a transcript shows (a deletion's payload, which
    ``to_json`` leaves out, is None): how a volume's messages reach its child process."""
    deleted = value.get("deleted")
    return ConversationMessage(
        event_id=value["event_id"],
        message_id=value.get("message_id"),
        kind=value["kind"],
        type=value.get("type"),
        direction=value["direction"],
        timestamp=value.get("timestamp"),
        received_at=value.get("received_at") or "",
        payload=value.get("payload"),
        statuses=[(s["status"], s["timestamp"]) for s in value.get("statuses") or []],
        edits=[Change(e["event_id"], "edit", e["by"], e["timestamp"], e["payload"]) for e in value.get("edits") or []],
        deletion=None
        if deleted is None
        else Change(deleted["event_id"], deleted["how"], deleted["by"], deleted["timestamp"], None),
        media=value.get("media"),
        unreadable=value.get("unreadable"),
    )


def header_to_json(header: ExportHeader) -> dict[str, Any]:
    """The header as JSON (times as ISO 8601), for a volume's child process."""

    def moment(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "scope": header.scope,
        "title": header.title,
        "export_id": header.export_id,
        "custodians": [{"kind": c.kind, "label": c.label, "ref": c.ref} for c in header.custodians],
        "period_start": moment(header.period_start),
        "period_end": moment(header.period_end),
        "time_zone": header.time_zone,
        "language": header.language,
        "requested_by": header.requested_by,
        "reason": header.reason,
        "generated_at": header.generated_at.isoformat(),
        "case_ref": header.case_ref,
    }


def header_from_json(value: Mapping[str, Any]) -> ExportHeader:
    def moment(text_value: str | None) -> datetime | None:
        return None if text_value is None else datetime.fromisoformat(text_value)

    return ExportHeader(
        scope=value["scope"],
        title=value["title"],
        export_id=value["export_id"],
        custodians=tuple(Custodian(kind=c["kind"], label=c["label"], ref=c["ref"]) for c in value["custodians"]),
        period_start=moment(value["period_start"]),
        period_end=moment(value["period_end"]),
        time_zone=value["time_zone"],
        language=value["language"],
        requested_by=value["requested_by"],
        reason=value["reason"],
        generated_at=datetime.fromisoformat(value["generated_at"]),
        case_ref=value.get("case_ref"),
    )


# ---------------------------------------------------------------------------------------------------- rendering


@dataclass(frozen=True, slots=True, kw_only=True)
class PdfVolume:
    """A volume written: its file, page and message counts, sha256, and what rendering it cost (wall seconds, the
    child's peak resident memory and peak address space, which the memory limit bounds)."""

    number: int
    path: Path
    pages: int
    messages: int
    sha256: str
    seconds: float
    peak_rss_bytes: int
    peak_address_space_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeLimits:
    """How each volume's child process is bounded: messages per volume, address space (RLIMIT_AS) and wall time."""

    messages_per_volume: int = DEFAULT_MESSAGES_PER_VOLUME
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES
    timeout_s: float = DEFAULT_VOLUME_TIMEOUT_S


def volume_filename(export_id: str, number: int) -> str:
    """``transcript-<export id>-<volume>.pdf``, the export id reduced to characters safe in a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", export_id)[:80] or "export"
    return f"transcript-{safe}-{number:03d}.pdf"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_pdf(
    messages: Sequence[ConversationMessage],
    header: ExportHeader,
    media: MediaFiles,
    out_dir: Path,
    *,
    limits: VolumeLimits | None = None,
    on_volume: Callable[[PdfVolume, int], None] | None = None,
) -> list[PdfVolume]:
    """Render ``messages`` (in order) as PDF volumes in ``out_dir``, one child process per volume, one after the
    other; ``on_volume(volume, volumes)`` after each (progress). Returns what was written.

    Raises ValueError before anything is rendered when the header's time zone is unknown or the limits make no
    sense, and :class:`VolumeFailed` naming the volume when its child fails, is killed (its memory limit) or
    exceeds its time; the volumes written before it stay, the failed one leaves no file.
    """
    limits = limits or VolumeLimits()
    time_zone(header.time_zone)
    plans = plan_volumes(len(messages), limits.messages_per_volume)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    # Decrypted messages and thumbnails live in a private temporary folder (0700) that is removed afterwards.
    with tempfile.TemporaryDirectory(prefix="wa-archive-pdf-") as work:
        for plan in plans:
            volume = _render_volume(
                messages[plan.first : plan.first + plan.count],
                header,
                media,
                out_dir / volume_filename(header.export_id, plan.number),
                work=Path(work),
                plan=plan,
                volumes=len(plans),
                total=len(messages),
                limits=limits,
            )
            written.append(volume)
            if on_volume is not None:
                on_volume(volume, len(plans))
    return written


def _jsonl(messages: Iterable[ConversationMessage], path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for message in messages:
            # ensure_ascii: a lone surrogate the read side let through cannot break the file's UTF-8.
            handle.write(json.dumps(message.to_json(), ensure_ascii=True) + "\n")


def _render_volume(
    messages: Sequence[ConversationMessage],
    header: ExportHeader,
    media: MediaFiles,
    path: Path,
    *,
    work: Path,
    plan: VolumePlan,
    volumes: int,
    total: int,
    limits: VolumeLimits,
) -> PdfVolume:
    folder = work / f"volume-{plan.number:03d}"
    folder.mkdir()
    _jsonl(messages, folder / "messages.jsonl")
    partial = path.with_name(path.name + ".partial")
    in_volume = {m.event_id for m in messages}
    job = {
        "header": header_to_json(header),
        "media_root": str(media.root),
        "media": {event_id: str(p) for event_id, p in media.by_event.items() if event_id in in_volume},
        "plan": {"number": plan.number, "first": plan.first, "count": plan.count},
        "volumes": volumes,
        "total": total,
        "messages": str(folder / "messages.jsonl"),
        "thumbnails": str(folder),
        "out": str(partial),
        "memory_limit_bytes": limits.memory_limit_bytes,
    }
    (folder / "job.json").write_text(json.dumps(job), encoding="utf-8")
    # The child imports this checkout's services package, wherever the command was started from.
    root = str(Path(services.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "services.evidence.pdf_worker", str(folder / "job.json")],
            capture_output=True,
            text=True,
            timeout=limits.timeout_s,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        partial.unlink(missing_ok=True)
        raise VolumeFailed(plan.number, volumes, f"not done after {limits.timeout_s:.0f} s") from None
    seconds = time.monotonic() - started
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise VolumeFailed(plan.number, volumes, _failure(done.returncode, done.stderr, limits))
    result = json.loads(done.stdout)
    partial.replace(path)
    return PdfVolume(
        number=plan.number,
        path=path,
        pages=int(result["pages"]),
        messages=plan.count,
        sha256=file_sha256(path),
        seconds=seconds,
        peak_rss_bytes=int(result["peak_rss_bytes"]),
        peak_address_space_bytes=int(result["peak_address_space_bytes"]),
    )


def _failure(returncode: int, stderr: str, limits: VolumeLimits) -> str:
    """Why a child failed, in words an operator can act on. Its stderr holds only the worker's one-line verdict
    (never a message's text: the worker prints the exception's type, not its message)."""
    limit = f"{limits.memory_limit_bytes / 2**20:.0f} MiB"
    lines = [line for line in stderr.splitlines() if line.startswith(VERDICT_PREFIX)]
    verdict = lines[-1].removeprefix(VERDICT_PREFIX) if lines else ""
    if returncode == MEMORY_EXIT_CODE or verdict == "MemoryError":
        return f"it exceeded its memory limit of {limit} (fewer messages per volume, or a higher limit)"
    if verdict:
        return f"its process exited with code {returncode}: {verdict[:100]}"
    # Out of address space, Pango or GLib abort (a thread they cannot create) and CPython may die while it exits:
    # a signal or an odd exit code with no verdict is, in practice, the memory limit.
    how = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
    return (
        f"its process died ({how}), most likely at its memory limit of {limit}"
        " (fewer messages per volume, or a higher limit)"
    )
