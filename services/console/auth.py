"""Who may sign in to the console: one seam, :class:`Authenticator`.

Today's implementation, :class:`NamedCredentials`, checks a name and secret against the admin API's named tokens
(``WA_RETENTION_ADMIN_TOKENS``): the name is the actor of the audit log, the token's role is the person's role.
Single sign-on (OpenID Connect) will be another implementation of the same protocol, its claims mapped to an
:class:`~services.retention.actions.Operator`; nothing else in the console knows how a person was authenticated.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Protocol

from services.retention.actions import Operator
from services.retention.settings import RetentionSettings

# A failed sign-in answers after this long, which caps guessing at a few tries per second per connection.
FAILURE_DELAY_S = 0.5


class Authenticator(Protocol):
    async def authenticate(self, name: str, secret: str) -> Operator | None:
        """The operator these credentials belong to, or None (after a delay) when they are wrong."""
        ...


class NamedCredentials:
    """Sign-in with a named admin token: the name and the token as the password."""

    def __init__(self, settings: RetentionSettings, failure_delay_s: float = FAILURE_DELAY_S) -> None:
        self._tokens = {
            name: (t.token.get_secret_value().encode(), t.role) for name, t in settings.admin_tokens.items()
        }
        self._failure_delay_s = failure_delay_s

    async def authenticate(self, name: str, secret: str) -> Operator | None:
        offered = secret.encode()
        found: Operator | None = None
        # Every name is compared, so the time taken does not tell which names exist.
        for known, (expected, role) in self._tokens.items():
            if hmac.compare_digest(offered, expected) & hmac.compare_digest(name.encode(), known.encode()):
                found = Operator(known, role)
        if found is None:
            await asyncio.sleep(self._failure_delay_s)
        return found
