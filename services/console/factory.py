"""The review console: server-rendered pages over the action layer (services/actions/layer.py).

A community manager signs in, searches (metadata only), gives a reason, and reads the conversation as a phone shows
it; the data protection officer also manages holds, erasure requests, the audit log and the retention dry run.
The console is one more adapter: every read, search and change is an :class:`Actions` call, which checks the role,
writes the audit row and counts the metrics, exactly as for the admin API and the CLI.

:func:`create_console_app` wires the pieces: the routers (services/console/routers/, one per resource), the
dependencies they take from ``app.state`` (services/console/deps.py), the refusal handlers
(services/console/errors.py) and the middleware below.

Safe by construction:
- every page is rendered by Jinja2 with autoescape on, so a message's ``<script>`` is text (services/console/pages.py);
- every response carries a Content-Security-Policy without inline scripts or styles (:data:`SECURITY_HEADERS`),
  and pages ``Cache-Control: no-store``;
- every form that changes something carries the session's CSRF token, and a POST whose ``Origin`` is another site
  is refused; the sign-in form has its own double-submit token;
- search terms, a person's number and reasons travel in POST bodies, never in URLs; the only identifier in a URL
  is a media file's event id (a hash), under the session of someone who gave a reason for its conversation.

Sign-in that holds:
- people sign in through the OpenID Connect provider (services/console/oidc.py); the named tokens remain in the local
  demo only, and a console with neither refuses to start (:class:`NoSignIn`);
- bodies and forms are capped before they are read (``max_body_bytes``, ``max_form_fields``,
  ``max_form_field_bytes``: 413); a POST of a signed-in page checks the session and the role its action needs
  before its form is read;
- sign-in attempts are throttled per name and per client address, with a lockout (services/console/throttle.py);
  every failed sign-in and every refusal is counted (services/console/metrics.py) and logged, with the account
  name only when it is one (never the token);
- a session ends when idle (``idle_timeout_s``), at its absolute lifetime (``session_lifetime_s``), when the
  provider ends it (back-channel logout) or a re-read of its roles fails, and — a named token's — at the first
  request after the credential that opened it was removed, replaced or given another role.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final
from urllib.parse import urlsplit

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from starlette.datastructures import MutableHeaders

from services.actions.access import ArchiveAccess
from services.actions.layer import Actions
from services.console.auth import Authenticator, NamedCredentials
from services.console.deps import Archive, Console
from services.console.errors import answer_refusals, count_refusal
from services.console.metrics import ConsoleMetrics
from services.console.oidc import ProviderSignIn
from services.console.pages import Pages, console_templates, package_dir
from services.console.routers import ROUTERS
from services.console.sessions import SessionStore
from services.console.settings import ConsoleSettings
from services.console.throttle import SigninThrottle, ThrottlePolicy
from services.core.http import ASGIApp, BodyLimit, Message, Receive, Scope, Send
from services.core.ops_http import OpsServer, ops_app
from services.core.published import LOCAL_DEMO_FLAG, local_demo
from services.governance.metrics import RetentionMetrics
from services.retention.settings import RetentionSettings

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    # same-origin, not no-referrer: under no-referrer Chromium sends `Origin: null` with the forms, which the origin
    # check must refuse; no URL of the console holds personal data, and none is sent to another site.
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",  # no other site may embed a decrypted media file
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


def form_targets_of(provider: ProviderSignIn | None) -> tuple[str, ...]:
    """Where the console's own forms may lead besides itself: the provider's origin, to which the single sign-on
    button and sign-out redirect (CSP ``form-action`` applies to a form's redirects too, in Chromium)."""
    if provider is None:
        return ()
    issuer = urlsplit(provider.settings.issuer)
    return (f"{issuer.scheme}://{issuer.netloc}",)


class SecurityHeaders:
    """Pure ASGI middleware: :data:`SECURITY_HEADERS` on every response, ``Cache-Control: no-store`` on all but the
    static files; ``form_targets`` join the CSP's ``form-action``. Pure ASGI like BodyLimit: it touches the
    response's start only, never the request."""

    def __init__(self, app: ASGIApp, form_targets: tuple[str, ...] = ()) -> None:
        self.app = app
        csp = CSP.replace("form-action 'self'", " ".join(("form-action 'self'", *form_targets)))
        self.headers = {**SECURITY_HEADERS, "content-security-policy": csp}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope["path"]).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
                if not static:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class NoSignIn(Exception):
    """The console has no way to sign people in: no OpenID Connect provider, and not the local demo."""

    def __init__(self) -> None:
        super().__init__(
            "refusing to start: the console signs people in through an OpenID Connect provider, and none is "
            "configured. Set WA_CONSOLE_OIDC__ISSUER, WA_CONSOLE_OIDC__CLIENT_ID and WA_CONSOLE_OIDC__CLIENT_SECRET "
            "(docs/OPERATIONS.md, 'Single sign-on: sessions, step-up, logout'). The named tokens of "
            "WA_RETENTION_ADMIN_TOKENS sign people in "
            f"only in a local demo ({LOCAL_DEMO_FLAG}=1)."
        )


def sign_in_of(
    settings: ConsoleSettings, retention: RetentionSettings, *, demo: bool
) -> tuple[Authenticator | None, ProviderSignIn | None]:
    """How people sign in: the provider when configured; the named tokens in the local demo only. NoSignIn when
    that leaves none."""
    provider = ProviderSignIn(settings.oidc) if settings.oidc is not None else None
    named = NamedCredentials(retention) if demo else None
    if provider is None and named is None:
        raise NoSignIn
    return named, provider


def signin_throttle(access: ArchiveAccess, settings: ConsoleSettings, retention: RetentionSettings) -> SigninThrottle:
    """The sign-in throttle of the settings, counting in the archive's database (shared by every replica)."""

    def policy(max_attempts: int) -> ThrottlePolicy:
        return ThrottlePolicy(
            max_attempts=max_attempts, window_s=settings.signin_window_s, lockout_s=settings.signin_lockout_s
        )

    return SigninThrottle(
        access.pool,
        retention.keys.pepper_bytes(),
        by_name=policy(settings.signin_attempts_per_name),
        by_address=policy(settings.signin_attempts_per_address),
    )


def console_lifespan(
    settings: ConsoleSettings,
    retention: RetentionSettings,
    open_access: Callable[[], Awaitable[ArchiveAccess]],
    *,
    registry: CollectorRegistry,
    serve_ops: bool,
    provider: ProviderSignIn | None = None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """While the app runs: the archive open (``app.state.archive``: the actions, the sessions, the throttle) and,
    if ``serve_ops``, the probes and metrics on ``settings.ops_port`` (ready once the archive is open). A failure to
    open the archive fails the start-up."""
    metrics = RetentionMetrics(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        access = await open_access()
        app.state.archive = Archive(
            actions=Actions(access, metrics),
            sessions=SessionStore(access.pool, settings.idle_timeout_s, settings.session_lifetime_s),
            throttle=signin_throttle(access, settings, retention),
        )
        ops = OpsServer(ops_app(registry, lambda: app.state.archive is not None), settings.host, settings.ops_port)
        if serve_ops:
            await ops.start()
        try:
            yield
        finally:
            if serve_ops:
                await ops.stop()
            app.state.archive = None
            await access.close()
            if provider is not None:
                await provider.close()

    return lifespan


def create_console_app(
    settings: ConsoleSettings,
    retention: RetentionSettings,
    open_access: Callable[[], Awaitable[ArchiveAccess]],
    *,
    authenticator: Authenticator | None = None,
    provider: ProviderSignIn | None = None,
    demo: bool | None = None,
    registry: CollectorRegistry | None = None,
    serve_ops: bool = True,
) -> FastAPI:
    """The console's ASGI app. ``open_access`` opens the archive at start-up (with the console's own database role
    and S3 identity); people sign in through ``provider`` (by default the one ``settings.oidc`` configures) and, in
    the local demo (``demo``, by default ``WA_LOCAL_DEMO=1``), with ``authenticator`` (by default the named
    credentials of ``retention``); NoSignIn when that leaves no way to sign in. The metrics go to ``registry``;
    ``serve_ops`` serves the probes and metrics on their own port."""
    named, configured = sign_in_of(settings, retention, demo=local_demo() if demo is None else demo)
    if authenticator is None:
        authenticator = named
    provider = provider or configured
    registry = registry or CollectorRegistry()
    console_metrics = ConsoleMetrics(registry)
    app = FastAPI(
        title="wa-archive review console",
        lifespan=console_lifespan(
            settings, retention, open_access, registry=registry, serve_ops=serve_ops, provider=provider
        ),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.console = Console(
        settings=settings,
        pages=Pages(console_templates(), settings.default_timezone),
        metrics=console_metrics,
        authenticator=authenticator,
        provider=provider,
    )
    app.state.archive = None
    app.mount("/static", StaticFiles(directory=package_dir("static")), name="static")
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        on_refused=lambda: count_refusal(console_metrics, 413, "body", "request body too large"),
    )
    app.add_middleware(SecurityHeaders, form_targets=form_targets_of(provider))
    answer_refusals(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
