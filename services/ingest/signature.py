"""``X-Hub-Signature-256``: the HMAC-SHA256 of the raw request body with a Meta app secret.

Meta signs the bytes it sends (non-ASCII escaped as ``\\uXXXX``, ``/`` as ``\\/``): the check runs on the bytes
received, never on a re-serialisation. Several apps may deliver to one endpoint, so every configured secret is
tried — always all of them, each with a constant-time comparison — and the time taken does not depend on which
secret matched or how much of the digest did.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Final

from services.core.vocabulary import is_lower_hex

SIGNATURE_PREFIX: Final = "sha256="
_DIGEST_HEX_LENGTH: Final = 2 * hashlib.sha256().digest_size


# What an app secret's id is the HMAC of: a constant, so the id names the secret without revealing anything of it.
_APP_ID_MESSAGE: Final = b"wa-archive: the id of a Meta app secret"


def app_id(app_secret: bytes) -> str:
    """A stable, public name of a Meta app secret (16 hex digits): which app a POST was verified for, recorded with
    the journal record (``wa-app``) without the secret or its position in the settings. An HMAC under the secret,
    like the signatures the journal already keeps beside the bytes they sign, so it reveals no more of it."""
    return hmac.new(app_secret, _APP_ID_MESSAGE, hashlib.sha256).hexdigest()[:16]


def sign(raw_body: bytes, app_secret: bytes) -> str:
    """The ``X-Hub-Signature-256`` value Meta sends for ``raw_body``: ``"sha256=<64 lowercase hex>"``."""
    return SIGNATURE_PREFIX + hmac.new(app_secret, raw_body, hashlib.sha256).hexdigest()


class SignatureVerifier:
    """Checks ``X-Hub-Signature-256`` against every configured app secret."""

    def __init__(self, app_secrets: Sequence[bytes]) -> None:
        """Raises ValueError unless ``app_secrets`` is a sequence of at least one non-empty ``bytes`` secret
        (a single ``bytes`` object is refused: it would be read as a sequence of integers)."""
        if isinstance(app_secrets, bytes | bytearray | str):
            raise ValueError("app_secrets must be a sequence of secrets, not a single secret")
        secrets = tuple(app_secrets)
        if not secrets:
            raise ValueError("at least one app secret is required")
        if any(not isinstance(secret, bytes) or not secret for secret in secrets):
            raise ValueError("every app secret must be non-empty bytes")
        self._secrets: tuple[bytes, ...] = secrets

    def verify(self, raw_body: bytes, header: str | None) -> bool:
        """True when ``header`` is ``sha256=<64 hex digits>`` and equals the HMAC-SHA256 of ``raw_body`` under
        at least one configured secret. A missing header, another prefix (``sha1=``, ``SHA256=``), non-hex
        digits, surrounding whitespace or a wrong length give False; nothing raises."""
        return self.verified_by(raw_body, header) is not None

    def verified_by(self, raw_body: bytes, header: str | None) -> int | None:
        """As :meth:`verify`, but the position of the secret that matched (the first, if several do), or None."""
        if header is None or not header.startswith(SIGNATURE_PREFIX):
            return None
        offered_hex = header[len(SIGNATURE_PREFIX) :]
        # Checked before bytes.fromhex, which would accept spaces inside the digest.
        # Case-insensitive: a hex digest's case carries no information, and some proxies upper-case header values.
        if not is_lower_hex(offered_hex.lower(), _DIGEST_HEX_LENGTH):
            return None
        offered = bytes.fromhex(offered_hex)
        matched: int | None = None
        for position, secret in enumerate(self._secrets):
            # No early exit: every secret costs one HMAC and one constant-time comparison, match or not.
            if hmac.compare_digest(hmac.digest(secret, raw_body, "sha256"), offered) and matched is None:
                matched = position
        return matched
