"""X-Hub-Signature-256: HMAC-SHA256 of the raw request body with a Meta app secret.

Meta signs the bytes it sends (non-ASCII escaped as \\uXXXX, "/" as "\\/"); the check must run on the bytes
received, never on a re-serialisation. Several apps may deliver to one endpoint, so every configured secret is
tried, always all of them, with constant-time comparisons.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

PREFIX = "sha256="
HEX_DIGITS = frozenset("0123456789abcdef")


def sign(raw_body: bytes, app_secret: bytes) -> str:
    """The header value Meta would send for this body."""
    return PREFIX + hmac.new(app_secret, raw_body, hashlib.sha256).hexdigest()


class SignatureVerifier:
    def __init__(self, app_secrets: Sequence[bytes]) -> None:
        if not app_secrets or any(not secret for secret in app_secrets):
            raise ValueError("at least one non-empty app secret is required")
        self._secrets = tuple(app_secrets)

    def verify(self, raw_body: bytes, header: str | None) -> bool:
        """True when ``header`` is ``sha256=<64 hex>`` matching the HMAC of ``raw_body`` under any secret."""
        if header is None or not header.startswith(PREFIX):
            return False
        offered = header[len(PREFIX) :].lower()
        if len(offered) != 64 or not HEX_DIGITS.issuperset(offered):
            return False
        offered_bytes = offered.encode()
        matched = False
        for secret in self._secrets:
            expected = hmac.new(secret, raw_body, hashlib.sha256).hexdigest().encode()
            # No early exit: the time taken does not depend on which secret matched.
            matched |= hmac.compare_digest(expected, offered_bytes)
        return matched
