"""Who is calling the admin API, and may they: decided from the headers, before the request body is read."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match

from services.actions.layer import ActionName, Operator, authorize
from services.core.http import ASGIApp, Receive, Scope, Send, refuse
from services.core.ops_http import PROBE_PATHS
from services.core.refusals import Forbidden
from services.core.vocabulary import Role

# Answered without a token: the probes (also on the ops port, with /metrics).
OPEN_PATHS: Final = PROBE_PATHS


def requires(action: ActionName) -> dict[str, Any]:
    """Route options of a route that performs ``action``: :class:`AdminGate` refuses a token whose role does not
    allow it before the body is read (the action checks again); OpenAPI shows it as ``x-action``."""
    return {"openapi_extra": {"x-action": action}}


class AdminGate:
    """Pure ASGI middleware in front of the admin API: who is calling, and may they, decided from the headers.

    Every path but :data:`OPEN_PATHS` needs a known bearer token (else 401); a route declared with
    :func:`requires` also needs a role that allows its action (else 403). Both are answered before the request
    body is read, with ``Connection: close``. The caller is put in ``scope["state"]["operator"]`` for
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
    ) -> None:
        self.app = app
        self.routes = routes
        self.tokens = tokens
        self.on_refused = on_refused

    def caller(self, scope: Scope) -> Operator | None:
        header = next((bytes(v) for k, v in scope["headers"] if k == b"authorization"), b"")
        if not header.startswith(b"Bearer "):
            return None
        offered = header[len(b"Bearer ") :]
        found: Operator | None = None
        # Every token is compared, so the time taken does not tell which one nearly matched.
        for name, (secret, role) in self.tokens.items():
            if hmac.compare_digest(offered, secret):
                found = Operator(name, role)
        return found

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
        operator = self.caller(scope)
        if operator is None:
            self.on_refused(401, "token")
            await refuse(send, 401, "missing or unknown bearer token", {"www-authenticate": "Bearer"})
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
