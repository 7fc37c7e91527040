"""Sign-in with a named token, the local demo's way: one seam, :class:`Authenticator`.

People sign in through the OpenID Connect provider (services/console/oidc.py). In the local demo only
(``WA_LOCAL_DEMO=1``; services/console/factory.py decides), :class:`NamedCredentials` also checks a name and
secret against the admin API's named tokens (``WA_RETENTION_ADMIN_TOKENS``): the name is the actor of the audit log,
the token's role is the person's role. Nothing else in the console knows how a person was authenticated: both ways
give a session with an :class:`~services.actions.layer.Operator`.

A session opened with a named token keeps the :attr:`Credential.fingerprint` of the credential, and every request
asks :meth:`Authenticator.current` who that credential belongs to now: a token removed, replaced or given another
role ends the sessions it opened at their next request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass
from typing import Protocol

from services.actions.layer import Operator
from services.retention.settings import RetentionSettings

# A failed sign-in answers after this long; the throttle (services/console/throttle.py) bounds the number of tries.
FAILURE_DELAY_S = 0.5


@dataclass(frozen=True, slots=True)
class Credential:
    """Who signed in, and a fingerprint of the credential they used (stored with the session, never the secret)."""

    operator: Operator
    fingerprint: bytes


class Authenticator(Protocol):
    async def authenticate(self, name: str, secret: str) -> Credential | None:
        """The credential these name and secret make, or None (after a delay) when they are wrong."""
        ...

    def current(self, name: str, fingerprint: bytes) -> Operator | None:
        """Who the credential of this fingerprint belongs to now, or None when it is no longer valid."""
        ...

    def known(self, name: str) -> bool:
        """Whether ``name`` is an account (to log a failed sign-in's name only when it is one: a person may type
        their token in the name field)."""
        ...


def fingerprint(name: str, token: bytes) -> bytes:
    # Tokens carry 128 bits or more (services/core/token_strength.py): their digest cannot be inverted by search.
    return hashlib.sha256(b"wa-archive console credential\x00" + name.encode() + b"\x00" + token).digest()


class NamedCredentials:
    """Sign-in with a named admin token: the name and the token as the password."""

    def __init__(self, settings: RetentionSettings, failure_delay_s: float = FAILURE_DELAY_S) -> None:
        self._tokens = {
            name: (t.token.get_secret_value().encode(), t.role) for name, t in settings.admin_tokens.items()
        }
        self._failure_delay_s = failure_delay_s

    async def authenticate(self, name: str, secret: str) -> Credential | None:
        offered = secret.encode()
        found: Credential | None = None
        # Every name is compared, so the time taken does not tell which names exist.
        for known, (expected, role) in self._tokens.items():
            if hmac.compare_digest(offered, expected) & hmac.compare_digest(name.encode(), known.encode()):
                found = Credential(Operator(known, role), fingerprint(known, expected))
        if found is None:
            await asyncio.sleep(self._failure_delay_s)
        return found

    def current(self, name: str, fingerprint_: bytes) -> Operator | None:
        entry = self._tokens.get(name)
        if entry is None or not hmac.compare_digest(fingerprint(name, entry[0]), fingerprint_):
            return None
        return Operator(name, entry[1])

    def known(self, name: str) -> bool:
        return name in self._tokens
