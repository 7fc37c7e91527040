"""Short-lived download links of an export job's files: an HMAC-SHA256 over the job, the file and the expiry.

The link is not the only check: the console also requires a live session of the job's requester or of a DPO
(services/console/routers/exports.py), so a link copied into a ticket or a browser history is useless after a few
minutes, and useless to anyone else before. The key is derived from the archive's pepper (:func:`link_key`), which
every console replica already holds: a link signed by one replica is honoured by the others, and no new secret has
to be provisioned. Pure: no I/O; the clock is passed in.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

# What the derived key is for: a pepper-derived key of another purpose (the sign-in throttle's) never signs a link.
LINK_KEY_PURPOSE: Final = b"wa-archive export download links v1"


def link_key(pepper: bytes) -> bytes:
    """The key that signs download links, derived from the pepper for this purpose alone."""
    return hmac.new(pepper, LINK_KEY_PURPOSE, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class SignedLink:
    """The query of a download link: when it stops working (Unix seconds) and its signature (hex)."""

    expires: int
    signature: str


def _signature(key: bytes, job_id: str, name: str, expires: int) -> str:
    # Fields joined by a byte that neither a UUID, a file name of an export nor a number holds.
    message = f"{job_id}\n{name}\n{expires}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign_link(key: bytes, *, job_id: str, name: str, now: float, ttl_s: float) -> SignedLink:
    """A link to file ``name`` of job ``job_id`` that works until ``now + ttl_s``."""
    expires = int(now + ttl_s)
    return SignedLink(expires, _signature(key, job_id, name, expires))


def link_valid(
    key: bytes, *, job_id: str, name: str, expires: str | int | None, signature: str | None, now: float
) -> bool:
    """Whether the link's signature is this job's and file's, and it has not expired. A missing, malformed or
    tampered value is False (never an exception): the route answers the same refusal for all of them."""
    if expires is None or signature is None:
        return False
    try:
        when = int(expires)
    except ValueError:
        return False
    expected = _signature(key, job_id, name, when)
    return hmac.compare_digest(expected.encode(), signature.encode()) and now < when
