"""The closed sets the console's forms offer as choices; a posted value outside them is no choice (the search
ignores it, a hold refuses it)."""

from __future__ import annotations

from typing import Final

from services.governance.holds import HoldScope

KINDS: Final = ("message", "echo", "history", "outbound", "status", "call")
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
HOLD_SCOPES: Final[tuple[HoldScope, ...]] = ("contact", "conversation", "group", "phone_number", "waba")
