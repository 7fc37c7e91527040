"""Which Graph API requests the gateway archives, and which it passes through (pure).

The company points its Graph API base URL at the gateway, so every path it calls arrives here:

- ``POST /{version}/{phone-number-id}/messages`` → :data:`SEND` (a message: journaled, forwarded, its answer
  journaled);
- ``POST /{version}/{phone-number-id}/media`` → :data:`UPLOAD` (a medium: its bytes staged, forwarded, linked to the
  person when a send uses its id);
- anything else (templates, profile, phone numbers, ``GET /{media-id}``…) → :data:`PASS` (forwarded unchanged).

A version is ``v`` and digits with an optional ``.minor`` (``v21.0``); a phone number id is Meta's digits (letters,
``_`` and ``-`` let through for stand-ins), so nothing that could change the path reaches a journal key. A path that
names ``messages`` or ``media`` but not in this shape is passed through: the Graph API answers it, and no message
can be sent through a path the gateway does not recognise (Meta sends only on the exact shape).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

RouteKind: TypeAlias = Literal["send", "upload", "pass"]
SEND: Final[RouteKind] = "send"
UPLOAD: Final[RouteKind] = "upload"
PASS: Final[RouteKind] = "pass"  # noqa: S105 — a route, not a password

VERSION: Final = re.compile(r"v[0-9]{1,3}(\.[0-9]{1,3})?")
PHONE_NUMBER_ID: Final = re.compile(r"[0-9A-Za-z_-]{1,64}")

# Headers of one hop only (RFC 9110 §7.6.1), never forwarded either way; ``host`` and ``content-length`` are the
# connection's own and set again by the client that forwards; ``x-wa-archive-author`` is the gateway's own (who wrote
# a send, for its approval: services/gateway/held.py), never Meta's business.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"x-wa-archive-author",
    }
)


@dataclass(frozen=True, slots=True)
class Route:
    kind: RouteKind
    version: str | None = None
    phone_number_id: str | None = None


def route(method: str, path: str) -> Route:
    """Where a request goes (module docstring). Never raises."""
    if method != "POST":
        return Route(PASS)
    parts = path.split("/")
    # "/v21.0/123/messages" splits into ["", "v21.0", "123", "messages"]; a trailing slash is another path.
    if len(parts) != 4 or parts[0] != "" or parts[3] not in ("messages", "media"):
        return Route(PASS)
    version, number = parts[1], parts[2]
    if not VERSION.fullmatch(version) or not PHONE_NUMBER_ID.fullmatch(number):
        return Route(PASS)
    return Route(SEND if parts[3] == "messages" else UPLOAD, version, number)


def forwarded_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The request's or the answer's headers minus those of one hop (:data:`HOP_BY_HOP`) and those that
    ``Connection`` names."""
    named = {
        token.strip().lower() for key, value in headers if key.lower() == b"connection" for token in value.split(b",")
    }
    return [(key, value) for key, value in headers if key.lower() not in HOP_BY_HOP and key.lower() not in named]


def upload_refusal(content_type: bytes | None, content_length: bytes | None, limit: int) -> str | None:
    """Why an upload (``POST …/media``) is refused before a byte of it is read, or None: it must be
    ``multipart/form-data`` with a boundary (what Meta takes), and a length it announces must be a number within
    ``limit`` (Meta's 100 MB and the form around it). A body without a length (chunked) is counted as it streams."""
    kind, _, parameters = (content_type or b"").partition(b";")
    if kind.strip().lower() != b"multipart/form-data" or b"boundary=" not in parameters.lower():
        return "an upload is multipart/form-data with a boundary"
    if content_length is not None:
        text = content_length.strip()
        if not text.isdigit():
            return "Content-Length is not a number"
        if int(text) > limit:
            return f"an upload exceeds {limit} bytes"
    return None
