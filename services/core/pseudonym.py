"""Pseudonyms: the only identifiers of people (and of their messages) allowed in index rows, object headers,
object keys, logs and metrics.

``subject_ref`` = HMAC-SHA256(pepper, "phone_number_id:person_id"). ``message_ref`` pseudonymises wamids too:
a wamid embeds the customer's phone number in base64, so raw wamids never leave the encrypted records.
"""

from __future__ import annotations

import hashlib
import hmac


def subject_ref(pepper: bytes, phone_number_id: str, person_id: str) -> str:
    if not person_id:
        raise ValueError("a subject pseudonym needs a person id")
    return hmac.new(pepper, f"{phone_number_id}:{person_id}".encode(), hashlib.sha256).hexdigest()


def message_ref(pepper: bytes, message_id: str) -> str:
    return hmac.new(pepper, b"msg\x00" + message_id.encode(), hashlib.sha256).hexdigest()
