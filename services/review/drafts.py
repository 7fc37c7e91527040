"""A message the business is about to send, as the customer would see it (pure): the draft of a held message
(services/actions/held_sends.py) read from the send body the company posted to the Graph API.

:func:`draft_of` reads any JSON value (never raises): a text, a template (the text the customer sees when the
gateway archived it, else its name and parameters), an image, a video, a document, an audio or a sticker (a named
attachment: the caption, the file name, the link or the media id), interactive buttons, lists and links, a
location, contacts, a reaction; another type is shown as such, with nothing invented. :func:`whatsapp_html` renders
WhatsApp's formatting (``*bold*``, ``_italic_``, ``~strike~``, ```` ```mono``` ````, `` `code` ``) as HTML whose
every character from the text is escaped: the only markup in its output is the few tags it adds itself.
:func:`draft_text` is the same draft as plain text (``wa-archive approvals show``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from markupsafe import Markup, escape

# The media types a send may carry, as Meta names them.
MEDIA_TYPES: Final = ("image", "video", "document", "audio", "sticker")
# Longest text kept from any one field: a send body is at most a few KB; this bounds a pathological one.
FIELD_MAX: Final = 4_096

# WhatsApp's inline formats, applied to already escaped text (escaping leaves * _ ~ ` alone and never makes them):
# a marker opens before a non-space and closes after one, on one line, not inside a word.
_INLINE: Final = (
    (re.compile(r"(?<![\w*])\*(?=\S)([^*\n]*?\S)\*(?![\w*])"), "strong"),
    (re.compile(r"(?<![\w_])_(?=\S)([^_\n]*?\S)_(?![\w_])"), "em"),
    (re.compile(r"(?<![\w~])~(?=\S)([^~\n]*?\S)~(?![\w~])"), "s"),
)
_MONO: Final = re.compile(r"```(.+?)```", re.DOTALL)
_CODE: Final = re.compile(r"(?<!`)`(?=\S)([^`\n]*?\S)`(?!`)")
# The tags whatsapp_html may write (the property tests strip exactly these).
ALLOWED_TAGS: Final = ("strong", "em", "s", "code")


def _formatted(escaped: str) -> str:
    parts = _CODE.split(escaped)
    out = []
    for index, part in enumerate(parts):
        if index % 2:  # inside `code`: shown as written
            out.append(f"<code>{part}</code>")
            continue
        shown = part
        for pattern, tag in _INLINE:
            shown = pattern.sub(lambda m, tag=tag: f"<{tag}>{m.group(1)}</{tag}>", shown)
        out.append(shown)
    return "".join(out)


def whatsapp_html(text: str) -> Markup:
    """``text`` as HTML with WhatsApp's formatting (module docstring); line breaks are kept as newlines (the
    bubble's style shows them, ``white-space: pre-wrap``). Everything from ``text`` is escaped."""
    escaped = str(escape(text))
    pieces = _MONO.split(escaped)
    out = []
    for index, piece in enumerate(pieces):
        # Odd pieces were between ``` fences: monospace, no other formatting inside.
        out.append(f'<code class="mono">{piece}</code>' if index % 2 else _formatted(piece))
    return Markup("".join(out))  # noqa: S704 — every piece of the input was escaped above


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    """A medium of the draft: its type, what names it (file name, caption-less link or media id) and whether it
    was sent by link (``link``) or by an uploaded media id."""

    type: str
    name: str | None
    link: str | None = None
    media_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ListSection:
    title: str | None
    rows: tuple[tuple[str, str | None], ...]  # (title, description)


@dataclass(frozen=True, slots=True, kw_only=True)
class Location:
    latitude: str | None
    longitude: str | None
    name: str | None
    address: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Contact:
    name: str | None
    phones: tuple[str, ...]
    emails: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Draft:
    """What a send body shows the customer. ``text`` is the body (a text's, a caption, a template's text as the
    gateway archived it, an interactive body); ``template`` names a template whose text is not known, with its
    ``parameters``; ``known`` is False for a type this view does not render (its type is still shown)."""

    type: str
    text: str | None = None
    header: str | None = None
    footer: str | None = None
    attachment: Attachment | None = None
    buttons: tuple[str, ...] = ()
    list_button: str | None = None
    sections: tuple[ListSection, ...] = ()
    link: tuple[str, str | None] | None = None  # (display text, url) of a call-to-action button
    location: Location | None = None
    contacts: tuple[Contact, ...] = ()
    template: str | None = None
    parameters: tuple[str, ...] = ()
    reaction: str | None = None
    preview_url: bool = False
    known: bool = True


def _s(value: Any) -> str | None:
    """A text field: a non-empty string (bounded), a number as written, else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value[:FIELD_MAX]
    return None


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _attachment(kind: str, media: dict[str, Any]) -> Attachment:
    link = _s(media.get("link"))
    name = _s(media.get("filename")) or (link.rsplit("/", 1)[-1] if link else None)
    return Attachment(type=kind, name=name, link=link, media_id=_s(media.get("id")))


def _parameter(value: Any) -> str | None:
    parameter = _d(value)
    kind = _s(parameter.get("type")) or "text"
    if kind == "text":
        return _s(parameter.get("text"))
    if kind in ("currency", "date_time"):
        return _s(_d(parameter.get(kind)).get("fallback_value"))
    if kind in MEDIA_TYPES:
        found = _attachment(kind, _d(parameter.get(kind)))
        return f"[{kind}: {found.name or found.media_id or '?'}]"
    return _s(parameter.get(kind)) or f"[{kind}]"


def _template(body: dict[str, Any], text: str | None) -> Draft:
    template = _d(body.get("template"))
    name = _s(template.get("name")) or "?"
    language = _s(_d(template.get("language")).get("code"))
    parameters: list[str] = []
    buttons: list[str] = []
    header = None
    for value in _l(template.get("components")):
        component = _d(value)
        found = [p for p in (_parameter(item) for item in _l(component.get("parameters"))) if p]
        kind = _s(component.get("type"))
        if kind == "button":
            buttons += found
        elif kind == "header" and found:
            header = found[0]
        else:
            parameters += found
    return Draft(
        type="template",
        text=text,
        header=header if text is None else None,
        template=f"{name} ({language})" if language else name,
        parameters=tuple(parameters),
        buttons=tuple(buttons),
    )


def _interactive(body: dict[str, Any]) -> Draft:
    interactive = _d(body.get("interactive"))
    kind = _s(interactive.get("type")) or "interactive"
    header = _d(interactive.get("header"))
    header_kind = _s(header.get("type"))
    attachment = None
    header_text = None
    if header_kind == "text":
        header_text = _s(header.get("text"))
    elif header_kind in MEDIA_TYPES:
        attachment = _attachment(header_kind, _d(header.get(header_kind)))
    action = _d(interactive.get("action"))
    buttons = tuple(
        title for b in _l(action.get("buttons")) if (title := _s(_d(_d(b).get("reply")).get("title"))) is not None
    )
    sections = tuple(
        ListSection(
            title=_s(_d(section).get("title")),
            rows=tuple(
                (title, _s(_d(row).get("description")))
                for row in _l(_d(section).get("rows"))
                if (title := _s(_d(row).get("title"))) is not None
            ),
        )
        for section in _l(action.get("sections"))
    )
    parameters = _d(action.get("parameters"))
    link = None
    if kind == "cta_url":
        link = (_s(parameters.get("display_text")) or "?", _s(parameters.get("url")))
    elif kind == "flow":
        link = (_s(parameters.get("flow_cta")) or "?", None)
    extra = () if buttons or kind != "location_request_message" else ("📍",)
    return Draft(
        type=f"interactive/{kind}",
        text=_s(_d(interactive.get("body")).get("text")),
        header=header_text,
        footer=_s(_d(interactive.get("footer")).get("text")),
        attachment=attachment,
        buttons=buttons + extra,
        list_button=_s(action.get("button")),
        sections=sections,
        link=link,
    )


def _contacts(values: Iterable[Any]) -> tuple[Contact, ...]:
    return tuple(
        Contact(
            name=_s(_d(_d(c).get("name")).get("formatted_name")),
            phones=tuple(p for p in (_s(_d(x).get("phone")) for x in _l(_d(c).get("phones"))) if p),
            emails=tuple(e for e in (_s(_d(x).get("email")) for x in _l(_d(c).get("emails"))) if e),
        )
        for c in values
    )


def draft_of(body: Any, template_text: str | None = None) -> Draft:
    """The draft of a send body (any JSON value; module docstring). ``template_text``: the text a template showed,
    as the gateway archived it (None: not known)."""
    body = _d(body)
    kind = _s(body.get("type")) or "text"
    if kind == "text":
        text = _d(body.get("text"))
        return Draft(type=kind, text=_s(text.get("body")), preview_url=text.get("preview_url") is True)
    if kind == "template":
        return _template(body, _s(template_text))
    if kind in MEDIA_TYPES:
        media = _d(body.get(kind))
        return Draft(type=kind, text=_s(media.get("caption")), attachment=_attachment(kind, media))
    if kind == "interactive":
        return _interactive(body)
    if kind == "location":
        place = _d(body.get("location"))
        return Draft(
            type=kind,
            location=Location(
                latitude=_s(place.get("latitude")),
                longitude=_s(place.get("longitude")),
                name=_s(place.get("name")),
                address=_s(place.get("address")),
            ),
        )
    if kind == "contacts":
        return Draft(type=kind, contacts=_contacts(_l(body.get("contacts"))))
    if kind == "reaction":
        return Draft(type=kind, reaction=_s(_d(body.get("reaction")).get("emoji")))
    return Draft(type=kind, known=False)


def draft_text(draft: Draft) -> str:
    """The draft as plain text, one part a line (the CLI): what a person reads in a terminal, unformatted."""
    lines = [f"[{draft.type}]" + (f" template {draft.template}" if draft.template else "")]
    if draft.header:
        lines.append(f"header: {draft.header}")
    if draft.attachment is not None:
        a = draft.attachment
        lines.append(f"attachment ({a.type}): {a.name or a.media_id or a.link or '?'}")
    if draft.text:
        lines.append(draft.text)
    elif draft.template:
        lines.append("(the template's text is not archived; its parameters:)")
    lines += [f"  parameter: {p}" for p in draft.parameters]
    if draft.footer:
        lines.append(f"footer: {draft.footer}")
    lines += [f"  [button] {b}" for b in draft.buttons]
    if draft.list_button:
        lines.append(f"  [list] {draft.list_button}")
    for section in draft.sections:
        lines.append(f"  {section.title or ''}".rstrip())
        lines += [f"    - {title}" + (f": {description}" if description else "") for title, description in section.rows]
    if draft.link is not None:
        lines.append(f"  [link] {draft.link[0]}" + (f" -> {draft.link[1]}" if draft.link[1] else ""))
    if draft.location is not None:
        place = draft.location
        parts = [place.name, place.address, f"{place.latitude}, {place.longitude}"]
        lines.append("location: " + " · ".join(p for p in parts if p))
    for contact in draft.contacts:
        lines.append("contact: " + " · ".join([contact.name or "?", *contact.phones, *contact.emails]))
    if draft.reaction:
        lines.append(f"reaction: {draft.reaction}")
    if not draft.known:
        lines.append("(a message type this view does not render)")
    return "\n".join(lines)
