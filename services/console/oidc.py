"""Signing in to the console through an OpenID Connect provider: authorization code with PKCE, state and nonce;
roles read again while the session lives; RP-initiated and back-channel logout; step-up.

The flow (services/console/routers/oidc.py):

1. ``GET /oidc/signin`` (or ``/oidc/step-up``) makes a :class:`PendingSignIn` — ``state``, ``nonce``, a PKCE
   verifier, where to return, the language and time zone, and for a step-up the ``acr`` asked — and sends the
   browser to the provider with ``state``, ``nonce`` and the verifier's S256 challenge.
2. The pending sign-in is kept in the browser, in a short-lived cookie (:data:`PENDING_COOKIE`, 10 minutes,
   HttpOnly, ``Path=/oidc/callback``, SameSite=Lax because the provider's redirect is a cross-site navigation),
   rather than in a table: nothing to clean up, any replica can finish the sign-in, and a flood of sign-in starts
   writes nothing. It is *bound to the state*: the callback refuses a ``state`` that is not the cookie's (a forged
   or replayed callback, a sign-in started in another browser). The verifier in it is worthless without the code,
   which goes to the console only, and the code is worthless without the verifier (PKCE). A second sign-in started
   in another tab replaces the cookie, and the first one's callback asks to sign in again.
3. ``GET /oidc/callback`` exchanges the code (with the verifier) and checks the ID token
   (:func:`services.core.oidc.verify_id_token`: signature, issuer, audience, ``azp``, times, nonce). The actor of
   the audit log is the provider's ``preferred_username``; the header shows ``name``; the role comes from
   ``roles_claim`` through ``role_map``, and a person with no mapped role gets a page that says so and no session.

While the session lives (:meth:`ProviderSignIn.keep_current`), its roles are read again every ``roles_reread_s``
with the refresh token (the ID token of the refresh says the roles now); a refresh that fails in any way — the
provider refuses the grant (the person was disabled, their provider session ended), cannot be reached, or answers
a token that does not check out — ends the session, as does a refresh that leaves no mapped role.

Sign-out deletes the session and sends the browser to the provider's ``end_session_endpoint`` with the ID token as
``id_token_hint`` and the sign-in page as ``post_logout_redirect_uri``, which ends the provider's session too. The
provider's back-channel logout (``POST /oidc/backchannel-logout``) deletes every session of the provider session
(``sid``) or account (``sub``) its logout token names.

Step-up: an erasure, a hold release and an export need the session's ``acr`` to be ``step_up_acr``, obtained
within ``step_up_max_age_s`` (the ID token's ``auth_time``); a session without it is sent back to the provider with
``acr_values`` and returns to the page it was on, in a new session (a new id after a gain of privilege) that keeps
the new ``acr`` and its time.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import httpx
import orjson
from fastapi import Request

from services.actions.layer import Operator
from services.console.sessions import ProviderLink, ProviderSecrets, Session, SessionStore
from services.core.oidc import (
    LEEWAY_S,
    Identity,
    LogoutRequest,
    OidcClient,
    ProviderUnavailable,
    TokenEndpointRefused,
    TokenRefused,
    archive_role,
    new_code_verifier,
    new_state,
    provider_roles,
    same_secret,
    verify_id_token,
    verify_logout_token,
)
from services.core.settings import ConsoleOidcSettings
from services.core.vocabulary import Role

log = logging.getLogger("wa_archive.console")

PENDING_COOKIE: Final = "wa_console_oidc"
PENDING_COOKIE_PATH: Final = "/oidc/callback"
PENDING_MAX_AGE_S: Final = 600  # ten minutes to type a password and a one-time code
CALLBACK_PATH: Final = "/oidc/callback"
# Where a provider that cannot be reached answers in time or not at all: a person waits at most this long.
PROVIDER_TIMEOUT_S: Final = 10.0


def console_url(request: Request, provider: ProviderSignIn, path: str) -> str:
    """An absolute URL of the console for the provider (the callback, the post-logout page): under
    ``redirect_base_url`` when set, else under the request's own origin."""
    base = provider.settings.redirect_base_url or f"{request.url.scheme}://{request.url.netloc}"
    return base + path


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingSignIn:
    """A sign-in sent to the provider and not back yet (see the module docstring, step 2)."""

    state: str
    nonce: str
    verifier: str
    back: str
    locale: str
    timezone: str
    acr: str | None = None

    def cookie(self) -> str:
        fields = {
            "s": self.state,
            "n": self.nonce,
            "v": self.verifier,
            "b": self.back,
            "l": self.locale,
            "z": self.timezone,
            "a": self.acr,
        }
        return base64.urlsafe_b64encode(orjson.dumps(fields)).decode()

    @staticmethod
    def from_cookie(value: str | None) -> PendingSignIn | None:
        if not value:
            return None
        try:
            data = orjson.loads(base64.urlsafe_b64decode(value.encode()))
            return PendingSignIn(
                state=str(data["s"]),
                nonce=str(data["n"]),
                verifier=str(data["v"]),
                back=str(data["b"]),
                locale=str(data["l"]),
                timezone=str(data["z"]),
                acr=data.get("a"),
            )
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
            return None

    def answers(self, state: str | None) -> bool:
        """Whether the callback's ``state`` is this sign-in's."""
        return same_secret(state, self.state)


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedIn:
    """A person the provider vouched for: who, the role they are given (None: no mapped role), and what their
    session keeps."""

    identity: Identity
    role: Role | None
    link: ProviderLink

    @property
    def operator(self) -> Operator | None:
        return Operator(self.identity.username, self.role) if self.role is not None else None


class SignInFailed(Exception):
    """The provider's answer cannot sign anyone in; ``reason`` is a word (a log field), never a token."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"sign-in failed: {reason}")
        self.reason = reason


class ProviderSignIn:
    """The console's side of its OpenID Connect client (see the module docstring). ``clock``: seconds since the
    epoch (the tokens' times are checked against it)."""

    def __init__(
        self,
        settings: ConsoleOidcSettings,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._http = http or httpx.AsyncClient(timeout=PROVIDER_TIMEOUT_S, follow_redirects=False)
        secret = settings.client_secret.get_secret_value() if settings.client_secret else None
        self.client = OidcClient(
            issuer=settings.issuer, client_id=settings.client_id, client_secret=secret, http=self._http
        )
        self._clock = clock

    async def close(self) -> None:
        await self._http.aclose()

    def digest(self, kind: str, value: str) -> bytes:
        """What the table keeps of a provider's session id or subject (see migration 0028)."""
        return hashlib.sha256(f"wa-archive oidc {kind}\x00{self.settings.issuer}\x00{value}".encode()).digest()

    def role_of(self, identity: Identity) -> Role | None:
        return archive_role(provider_roles(identity.claims, self.settings.roles_claim), self.settings.role_map)

    def step_up_needed(self, session: Session) -> bool:
        """Whether ``session`` must step up before an erasure, a hold release or an export: it has not
        authenticated with ``step_up_acr``, or did so more than ``step_up_max_age_s`` ago."""
        wanted = self.settings.step_up_acr
        if not wanted:
            return False
        link = session.provider
        if link is None or link.acr is None or not same_secret(link.acr, wanted):
            return True
        at = link.secrets.stepped_up_at
        return at is None or self._clock() - at > self.settings.step_up_max_age_s

    async def start(
        self, *, redirect_uri: str, back: str, locale: str, timezone: str, step_up: bool
    ) -> tuple[str, PendingSignIn]:
        """The provider's authorization URL for a new sign-in (or step-up), and what to keep until its callback.
        ProviderUnavailable when the provider's metadata cannot be read."""
        acr = self.settings.step_up_acr if step_up and self.settings.step_up_acr else None
        pending = PendingSignIn(
            state=new_state(),
            nonce=new_state(),
            verifier=new_code_verifier(),
            back=back,
            locale=locale,
            timezone=timezone,
            acr=acr,
        )
        url = await self.client.authorization_url(
            redirect_uri=redirect_uri,
            state=pending.state,
            nonce=pending.nonce,
            code_verifier=pending.verifier,
            acr_values=acr,
        )
        return url, pending

    async def finish(self, *, code: str, pending: PendingSignIn, redirect_uri: str) -> SignedIn:
        """The person of the callback's ``code``: the code exchanged with the pending sign-in's verifier, the ID
        token checked with its nonce. SignInFailed when the provider refuses the code or its token does not check
        out, or (a step-up) when the new token's ``acr`` is not the one asked; ProviderUnavailable when it cannot be
        reached."""
        try:
            tokens = await self.client.exchange_code(
                code=code, code_verifier=pending.verifier, redirect_uri=redirect_uri
            )
        except TokenEndpointRefused as exc:
            raise SignInFailed(f"code refused ({exc.error})") from None
        if tokens.id_token is None:
            raise SignInFailed("no ID token (is the scope openid allowed?)")
        try:
            identity = await verify_id_token(
                tokens.id_token,
                self.client.keys,
                issuer=self.settings.issuer,
                client_id=self.settings.client_id,
                nonce=pending.nonce,
                now=self._clock(),
            )
        except TokenRefused as exc:
            raise SignInFailed(f"ID token refused ({exc.reason})") from None
        if pending.acr is not None and not same_secret(identity.acr, pending.acr):
            raise SignInFailed("step-up not done (acr)")
        link = ProviderLink(
            sid_digest=self.digest("sid", identity.sid) if identity.sid else None,
            sub_digest=self.digest("sub", identity.subject),
            acr=identity.acr,
            roles_read_at=datetime.now(UTC),
            secrets=ProviderSecrets(
                refresh_token=tokens.refresh_token,
                id_token=tokens.id_token,
                name=identity.name,
                stepped_up_at=self._stepped_up_at(identity),
            ),
        )
        return SignedIn(identity=identity, role=self.role_of(identity), link=link)

    def _stepped_up_at(self, identity: Identity) -> float | None:
        """When ``identity`` authenticated with the step-up's acr: its ``auth_time`` (the provider's own record of
        the authentication; a sign-in within the provider's single sign-on may carry an older one), else now."""
        wanted = self.settings.step_up_acr
        if not wanted or not same_secret(identity.acr, wanted):
            return None
        auth_time = identity.claims.get("auth_time")
        now = self._clock()
        if isinstance(auth_time, int | float) and not isinstance(auth_time, bool):
            return min(float(auth_time), now)
        return now

    async def keep_current(self, session: Session, sessions: SessionStore) -> Session | None:
        """``session`` with its roles as the provider says they are now: read again (by refresh) once
        ``roles_reread_s`` have passed, else as they are. None when the session ended here: the refresh failed,
        or left the person no mapped role, or the refreshed token is another person's (its row is deleted)."""
        link = session.provider
        if link is None or not await sessions.claim_reread(session, self.settings.roles_reread_s):
            return session
        ended = await self._reread(session, link)
        if isinstance(ended, str):
            await sessions.delete(session)
            log.warning(
                "console session ended at its roles' re-read: %s", ended, extra={"actor": session.operator.name}
            )
            return None
        role, secrets_ = ended
        if role != session.operator.role:
            log.info(
                "console session's role changed at its re-read", extra={"actor": session.operator.name, "role": role}
            )
        return await sessions.reread(session, role, secrets_)

    async def _reread(self, session: Session, link: ProviderLink) -> tuple[Role, ProviderSecrets] | str:
        """The role and secrets a refresh gives, or why the session must end."""
        refresh_token = link.secrets.refresh_token
        if refresh_token is None:
            return "no refresh token"
        try:
            tokens = await self.client.refresh(refresh_token)
        except TokenEndpointRefused as exc:
            return f"refresh refused ({exc.error})"
        except ProviderUnavailable as exc:
            return f"provider unavailable ({exc})"
        if tokens.id_token is None:
            return "the refresh gave no ID token"
        try:
            identity = await verify_id_token(
                tokens.id_token,
                self.client.keys,
                issuer=self.settings.issuer,
                client_id=self.settings.client_id,
                nonce=None,
                now=self._clock(),
            )
        except (TokenRefused, ProviderUnavailable) as exc:
            return f"refreshed ID token refused ({getattr(exc, 'reason', 'provider')})"
        if self.digest("sub", identity.subject) != link.sub_digest:
            return "the refreshed ID token is another person's"
        role = self.role_of(identity)
        if role is None:
            return "no mapped role any more"
        secrets_ = ProviderSecrets(
            refresh_token=tokens.refresh_token or refresh_token,
            id_token=tokens.id_token,
            name=identity.name,
            stepped_up_at=link.secrets.stepped_up_at,  # a refresh is no new authentication
        )
        return role, secrets_

    async def end_session_url(self, session: Session, post_logout_redirect_uri: str) -> str | None:
        """Where to send the browser to end the provider's session too (None: the provider has no such endpoint,
        or cannot be reached now)."""
        hint = session.provider.secrets.id_token if session.provider else None
        try:
            return await self.client.end_session_url(
                id_token_hint=hint, post_logout_redirect_uri=post_logout_redirect_uri
            )
        except ProviderUnavailable:
            return None

    async def logout(self, logout_token: str, sessions: SessionStore) -> int:
        """A back-channel logout: the sessions its token names deleted; returns how many. TokenRefused when the
        token does not check out, ProviderUnavailable when the provider's keys cannot be read."""
        request: LogoutRequest = await verify_logout_token(
            logout_token,
            self.client.keys,
            issuer=self.settings.issuer,
            client_id=self.settings.client_id,
            now=self._clock(),
        )
        return await sessions.delete_provider_sessions(
            sid_digest=self.digest("sid", request.sid) if request.sid else None,
            sub_digest=self.digest("sub", request.subject) if request.subject else None,
            begun_before=datetime.fromtimestamp(request.issued_at + LEEWAY_S, UTC),
        )
