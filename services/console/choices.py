"""The closed sets the console's forms offer as choices; a posted value outside them is no choice (the search
ignores it, a hold refuses it). The kinds and hold scopes come from services/core/vocabulary.py."""

from __future__ import annotations

from typing import Final

from services.core.vocabulary import CALL_KINDS, EVENT_KINDS, HOLD_SCOPES, MESSAGE_KINDS, STATUS_KINDS, Direction

__all__ = ["DIRECTION_WORDS", "HOLD_SCOPES", "KINDS", "TYPES"]

# The search filter's kinds: what a conversation is made of, in the vocabulary's order.
KINDS: Final = tuple(k for k in EVENT_KINDS if k in MESSAGE_KINDS | STATUS_KINDS | CALL_KINDS)
# How the search results word a direction (each word is translated, services/console/i18n.py).
DIRECTION_WORDS: Final[dict[Direction, str]] = {"inbound": "received", "outbound": "sent"}
TYPES: Final = (
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "button",
    "order",
    "reaction",
    "template",
    "edit",
    "revoke",
)
