"""Pseudonyms: the only identifiers of people, and of their messages, allowed outside the sealed records —
in index rows, object headers, object keys, the audit log, logs and metrics.

- ``subject_ref`` = hex HMAC-SHA256(pepper, ``"{phone_number_id}:{person_id}"``). It is scoped by the business
  phone number, so the same person writing to two numbers has two unrelated pseudonyms (the index links them
  through alias rows when needed), and it is keyed by a secret pepper, so it cannot be recomputed from a phone
  number by someone who does not hold the pepper.
- ``message_ref`` = hex HMAC-SHA256(pepper, ``b"msg\\x00" + message_id``). A wamid embeds the customer's phone
  number in base64, so a raw wamid is personal data: it never appears in the clear, only this reference. The
  ``msg\\x00`` domain prefix keeps message references apart from subject references under the same pepper.
- ``group_ref`` = hex HMAC-SHA256(pepper, ``b"grp\\x00" + group_id``). A Cloud API group id names a group of
  people; the index keeps only this reference, so the group's timeline is found without the id in the clear.
- ``holder_ref``: the pseudonym of a phone number's holder after the number changed hands at a given moment (a
  ``user_changed_number`` system message, services/core/holders.py): ``subject_ref`` of
  ``"{number}\\x00since\\x00{microseconds since the epoch}"``. Before any change it is the number's ``subject_ref``.

All four are deterministic (the same inputs always give the same reference: lookups and erasure depend on it) and
return 64 lowercase hex characters.
"""

from __future__ import annotations

import hmac
from datetime import UTC, datetime, timedelta

_MESSAGE_DOMAIN = b"msg\x00"
_GROUP_DOMAIN = b"grp\x00"


def subject_ref(pepper: bytes, phone_number_id: str, person_id: str) -> str:
    """The pseudonym of a person (``wa_id`` or business-scoped user id) as seen by one business phone number.

    Raises ValueError when ``person_id`` is empty (an empty id would merge every anonymous sender into one
    subject) or when ``pepper`` is empty (the reference would then be a plain, reversible hash).
    """
    if not person_id:
        raise ValueError("a subject pseudonym needs a person id")
    if not pepper:
        raise ValueError("a subject pseudonym needs a non-empty pepper")
    return hmac.digest(pepper, f"{phone_number_id}:{person_id}".encode("utf-8", "surrogatepass"), "sha256").hex()


def message_ref(pepper: bytes, message_id: str) -> str:
    """The pseudonym of a Cloud API message id (wamid): links statuses, edits and deletions to a message.

    Raises ValueError when ``message_id`` is empty (every message without an id would share one reference) or
    when ``pepper`` is empty.
    """
    if not message_id:
        raise ValueError("a message pseudonym needs a message id")
    if not pepper:
        raise ValueError("a message pseudonym needs a non-empty pepper")
    return hmac.digest(pepper, _MESSAGE_DOMAIN + message_id.encode("utf-8", "surrogatepass"), "sha256").hex()


def group_ref(pepper: bytes, group_id: str) -> str:
    """The pseudonym of a Cloud API group id (Groups API): links a group's messages, participants and updates.

    Raises ValueError when ``group_id`` is empty (every record without a group would share one reference) or when
    ``pepper`` is empty.
    """
    if not group_id:
        raise ValueError("a group pseudonym needs a group id")
    if not pepper:
        raise ValueError("a group pseudonym needs a non-empty pepper")
    return hmac.digest(pepper, _GROUP_DOMAIN + group_id.encode("utf-8", "surrogatepass"), "sha256").hex()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def holder_ref(pepper: bytes, phone_number_id: str, person_id: str, since: datetime | None) -> str:
    """The pseudonym of whoever holds ``person_id`` (a phone number) from ``since`` on: the moment it changed
    hands, exact to the microsecond (PostgreSQL's precision), or None for the number's holder before any change
    (its ``subject_ref``). ``since`` must be timezone-aware."""
    if since is None:
        return subject_ref(pepper, phone_number_id, person_id)
    if since.tzinfo is None:
        raise ValueError("a holder's start must be timezone-aware")
    micros = (since - _EPOCH) // timedelta(microseconds=1)
    return subject_ref(pepper, phone_number_id, f"{person_id}\x00since\x00{micros}")
