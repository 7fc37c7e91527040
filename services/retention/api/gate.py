"""Who is calling the admin API, and may they: decided from the headers, before the request body is read.

A caller presents a bearer token: an access token (a JWT) of the OpenID Connect provider (``WA_RETENTION_OIDC__*``:
its signature, issuer, audience and expiry checked by :class:`BearerTokens`, its roles mapped from the configured
claim; machines use the client-credentials grant), or — in the local demo only — one of the named static tokens of
``WA_RETENTION_ADMIN_TOKENS``. Outside the local demo the static tokens are not even loaded: one presented is an
unknown token (401).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import httpx
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match

from services.actions.layer import ActionName, Operator, authorize
from services.core.http import ASGIApp, Receive, Scope, Send, refuse
from services.core.oidc import (
    OidcClient,
    ProviderUnavailable,
    TokenRefused,
    archive_role,
    provider_roles,
    verify_access_token,
)
from services.core.ops_http import PROBE_PATHS
from services.core.refusals import Forbidden
from services.core.settings import ApiOidcSettings
from services.core.vocabulary import Role

log = logging.getLogger("wa_archive.retention.api")

# Answered without a token: the probes (also on the ops port, with /metrics).
OPEN_PATHS: Final = PROBE_PATHS


def requires(action: ActionName) -> dict[str, Any]:
    """Route options of a route that performs ``action``: :class:`AdminGate` refuses a token whose role does not
    allow it before the body is read (the action checks again); OpenAPI shows it as ``x-action``."""
    return {"openapi_extra": {"x-action": action}}


class NoRole(Exception):
    """A valid access token whose roles map to no archive role (403)."""


class BearerTokens:
    """The provider's access tokens for the admin API (see the module docstring). The caller's name, the audit
    log's actor, is the token's ``preferred_username`` (Keycloak's service accounts: ``service-account-<client>``),
    else its ``client_id`` or ``azp``, else its ``sub``."""

    def __init__(
        self,
        settings: ApiOidcSettings,
        *,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._http = http or httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        # The API is no client of the provider: the client only discovers its metadata and keys.
        self.client = OidcClient(
            issuer=settings.issuer, client_id=settings.audience, client_secret=None, http=self._http
        )
        self._clock = clock

    async def close(self) -> None:
        await self._http.aclose()

    async def operator(self, token: str) -> Operator:
        """Who ``token`` stands for. TokenRefused (401) when it does not check out, NoRole (403) when it maps to no
        role, ProviderUnavailable (503) when the provider's keys cannot be read."""
        claims = await verify_access_token(
            token, self.client.keys, issuer=self.settings.issuer, audience=self.settings.audience, now=self._clock()
        )
        role = archive_role(provider_roles(claims, self.settings.roles_claim), self.settings.role_map)
        names = (claims.get(k) for k in ("preferred_username", "client_id", "azp", "sub"))
        name = next((n for n in names if isinstance(n, str) and n), None)
        if role is None or name is None:
            raise NoRole(name or "unnamed caller")
        return Operator(name, role)


class AdminGate:
    """Pure ASGI middleware in front of the admin API: who is calling, and may they, decided from the headers.

    Every path but :data:`OPEN_PATHS` needs a bearer token: a static one of ``tokens`` (given in the local demo
    only) or an access token ``bearer`` accepts (else 401, ``WWW-Authenticate: Bearer``); a token with no archive
    role is 403, and so is, on a route declared with :func:`requires`, a role that does not allow its action; a
    provider whose keys cannot be read is 503. All are answered before the request body is read, with
    ``Connection: close``. The caller is put in ``scope["state"]["operator"]`` for
    :func:`services.retention.api.dependencies.operator_of`.

    ``routes`` are the routers' own routes (their paths carry their prefix): an app's ``router.routes`` hold
    included routers as opaque branches, in which a route's action could not be found.
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[BaseRoute],
        tokens: Mapping[str, tuple[bytes, Role]],
        on_refused: Callable[[int, str], None],
        bearer: BearerTokens | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.tokens = tokens
        self.on_refused = on_refused
        self.bearer = bearer

    async def caller(self, scope: Scope) -> Operator | None:
        """The caller of the request's bearer token, or None (no token, an unknown one, or an access token that
        does not check out). NoRole and ProviderUnavailable go through."""
        header = next((bytes(v) for k, v in scope["headers"] if k == b"authorization"), b"")
        if header[:7].lower() != b"bearer ":
            return None
        offered = header[len(b"Bearer ") :].strip()
        found: Operator | None = None
        # Every token is compared, so the time taken does not tell which one nearly matched.
        for name, (secret, role) in self.tokens.items():
            if hmac.compare_digest(offered, secret):
                found = Operator(name, role)
        if found is not None or self.bearer is None or offered.count(b".") != 2:
            return found
        try:
            return await self.bearer.operator(offered.decode("ascii"))
        except (TokenRefused, UnicodeDecodeError) as exc:
            log.info("admin API access token refused: %s", getattr(exc, "reason", "malformed"))
            return None

    def action_of(self, scope: Scope) -> ActionName | None:
        for route in self.routes:
            if isinstance(route, APIRoute) and route.matches(scope)[0] == Match.FULL:
                action: ActionName | None = (route.openapi_extra or {}).get("x-action")
                return action
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            operator = await self.caller(scope)
        except NoRole:
            self.on_refused(403, "role")
            await refuse(send, 403, "the token maps to no role of the archive")
            return
        except ProviderUnavailable as exc:
            self.on_refused(503, "provider")
            log.warning("admin API: the identity provider's keys are unavailable: %s", exc)
            await refuse(send, 503, "the identity provider cannot be reached to check the token")
            return
        if operator is None:
            self.on_refused(401, "token")
            await refuse(send, 401, "missing, unknown or invalid bearer token", {"www-authenticate": "Bearer"})
            return
        action = self.action_of(scope)
        if action is not None:
            try:
                authorize(operator, action)
            except Forbidden as exc:
                self.on_refused(403, "role")
                await refuse(send, 403, str(exc))
                return
        scope.setdefault("state", {})["operator"] = operator
        await self.app(scope, receive, send)
