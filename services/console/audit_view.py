"""The audit page's "details" column as a DPO reads it: each field of the row's JSON object under a name in the
viewer's language, dates in their time zone, numbers in their locale, pseudonyms shortened; never raw JSON.

Pure: the translator and the formatter are given (services/console/i18n.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Final

import orjson

from services.console.i18n import N_, Formatter
from services.core.vocabulary import HOLD_SCOPES, LOWER_HEX_DIGITS

# Every field the services write into audit details (services/retention), by its English name (marked for the
# catalogs' extraction, translated when shown). A field not listed (written by a later version) is shown under its
# own key rather than hidden.
DETAIL_LABELS: Final[dict[str, str]] = {
    "event_id": N_("Event"),
    "group": N_("In a group"),
    "group_ref": N_("Group"),
    "subjects": N_("Pseudonyms"),
    "subject_refs": N_("Pseudonyms"),
    "deadline_at": N_("Deadline"),
    "holds": N_("Holds"),
    "hold_id": N_("Hold"),
    "scope": N_("Scope"),
    "was": N_("Previous state"),
    "status": N_("State"),
    "keys": N_("Keys destroyed"),
    "keys_destroyed": N_("Keys destroyed"),
    "key_destroyed_at": N_("Keys destroyed at"),
    "objects_deleted": N_("Objects deleted"),
    "objects_locked": N_("Objects locked"),
    "events_deleted": N_("Records deleted"),
    "blocked_by_cases": N_("Blocked by cases"),
    "refusal_ground": N_("Refusal ground"),
    "ground": N_("Ground"),
    "request_ref": N_("Request"),
    "keywords": N_("Words searched"),
    "limit": N_("Limit"),
    "phone_number_id": N_("Business number"),
    "since": N_("From"),
    "until": N_("To"),
    "kind": N_("Kind"),
    "type": N_("Type"),
    "deleted_only": N_("Deleted for everyone"),
    "edited_only": N_("Edited"),
    "prefix": N_("Prefix"),
    "outcome": N_("Outcome"),
    "error": N_("Error"),
}
# A pseudonym or a key id is shown by its first characters, as in the pseudonym column.
SHORT_REF = 12
_LONG_HEX = 32


_ID_CHARACTERS: Final = LOWER_HEX_DIGITS | {"-"}  # pseudonyms, key ids and uuids


def _is_hex(value: str) -> bool:
    return len(value) >= _LONG_HEX and _ID_CHARACTERS.issuperset(value)


def _moment(value: str) -> dt.datetime | None:
    if len(value) < 19 or value[4] != "-" or "T" not in value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _value(value: Any, t: Callable[..., str], fmt: Formatter) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return t("yes") if value else t("no")
    if isinstance(value, int | float):
        return fmt.number(value)
    if isinstance(value, str):
        moment = _moment(value)
        if moment is not None:
            return fmt.datetime(moment)
        return value[:SHORT_REF] + "…" if _is_hex(value) else t(value) if value in DETAIL_VALUES else value
    if isinstance(value, list):
        return ", ".join(_value(item, t, fmt) for item in value) if value else "—"
    return orjson.dumps(value).decode()


# Values that are names of states or scopes: shown in the viewer's language (they are i18n.TERMS).
DETAIL_VALUES: Final = frozenset(
    {"received", "blocked", "in_progress", "completed", "refused", "extended", "failed"} | set(HOLD_SCOPES)
)


def audit_details(details: str, t: Callable[..., str], fmt: Formatter) -> list[tuple[str, str]]:
    """(label, value) per field of an audit row's ``details`` (its JSON object as stored), in order; a value that
    is not an object is shown as one field."""
    try:
        parsed = orjson.loads(details)
    except orjson.JSONDecodeError:
        return [(t("Details"), details)]
    if not isinstance(parsed, dict):
        return [] if parsed is None else [(t("Details"), _value(parsed, t, fmt))]
    return [(t(DETAIL_LABELS[key]) if key in DETAIL_LABELS else key, _value(v, t, fmt)) for key, v in parsed.items()]
