"""What a console route depends on, taken from ``app.state`` through FastAPI's ``Depends``, typed.

Two things live on ``app.state``, both set by :func:`services.console.factory.create_console_app`:

- ``console`` (:class:`Console`): what the console is built with and keeps for its whole life (settings, pages,
  metrics, how people sign in: the provider and, in the local demo, the named tokens);
- ``archive`` (:class:`Archive`): what its lifespan opens on the archive (the actions, the sessions, the sign-in
  throttle), None before it starts and after it stops.

A route asks for the piece it needs (``ActionsDep``, ``CurrentSession``…); a test mounts a router on a bare app and
replaces any of these functions with ``app.dependency_overrides``.

The session dependencies hold the console's rules: a session is live only while it is not idle too long, not past its
lifetime, and — opened through the provider — its roles were read again within ``roles_reread_s`` (the read ends it
when it fails), or — opened with a named token in the local demo — its credential is still configured with the same
role; a POST that changes or discloses something (:class:`PostedBy`) has its session and role checked before its form
is read, and is refused without the session's CSRF token or from another origin. An erasure, a hold release and an
export also need the stepped-up ``acr`` when one is configured (:class:`StepUpNeeded`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Final

from fastapi import Depends, Request
from starlette.datastructures import FormData

from services.actions.layer import ActionName, Actions, authorize
from services.console.auth import Authenticator
from services.console.forms import RefusedForm, field, read_form, same_origin
from services.console.metrics import ConsoleMetrics
from services.console.oidc import ProviderSignIn
from services.console.pages import SESSION_COOKIE, Pages
from services.console.sessions import Session, SessionStore, same_token
from services.console.settings import ConsoleSettings
from services.console.throttle import SigninThrottle

log = logging.getLogger("wa_archive.console")


class SignedOut(Exception):
    """No live session: the browser is sent to the sign-in page."""


# What a session must have stepped up for (WA_CONSOLE_OIDC__STEP_UP_ACR): what cannot be undone or takes data out.
# Under four eyes the first person requests it and the second carries it out by approving: both step up.
STEP_UP_ACTIONS: Final[frozenset[ActionName]] = frozenset(
    {"erase", "hold.release", "export", "export.search", "approval.decide"}
)


class StepUpNeeded(Exception):
    """The session's ``acr`` is not the step-up's: the browser is sent to the provider to step up, and comes back
    to ``back``."""

    def __init__(self, back: str) -> None:
        super().__init__("step-up needed")
        self.back = back


@dataclass(frozen=True, kw_only=True)
class Console:
    """What the console is built with, for its whole life (``app.state.console``)."""

    settings: ConsoleSettings
    pages: Pages
    metrics: ConsoleMetrics
    # How people sign in: through the provider, and (local demo only) with the named tokens; at least one is set.
    authenticator: Authenticator | None
    provider: ProviderSignIn | None = None


@dataclass(frozen=True, kw_only=True)
class Archive:
    """What the console's lifespan opens on the archive (``app.state.archive``)."""

    actions: Actions
    sessions: SessionStore
    throttle: SigninThrottle


def console_of(request: Request) -> Console:
    """``app.state.console``; RuntimeError (500) in an app that :func:`create_console_app` did not build."""
    found = getattr(request.app.state, "console", None)
    if not isinstance(found, Console):
        raise RuntimeError("app.state.console is not set: build the app with create_console_app")
    return found


def archive_of(request: Request) -> Archive | None:
    """``app.state.archive``: None before the lifespan opened the archive and after it closed it."""
    found = getattr(request.app.state, "archive", None)
    return found if isinstance(found, Archive) else None


def opened_archive(archive: Annotated[Archive | None, Depends(archive_of)]) -> Archive:
    """The opened archive; RuntimeError (500) when the console is not running."""
    if archive is None:
        raise RuntimeError("the console has not opened the archive: its lifespan is not running")
    return archive


def settings_of(console: Annotated[Console, Depends(console_of)]) -> ConsoleSettings:
    return console.settings


def pages_of(console: Annotated[Console, Depends(console_of)]) -> Pages:
    return console.pages


def metrics_of(console: Annotated[Console, Depends(console_of)]) -> ConsoleMetrics:
    return console.metrics


def authenticator_of(console: Annotated[Console, Depends(console_of)]) -> Authenticator | None:
    return console.authenticator


def provider_of(console: Annotated[Console, Depends(console_of)]) -> ProviderSignIn | None:
    return console.provider


def actions_of(archive: Annotated[Archive, Depends(opened_archive)]) -> Actions:
    return archive.actions


def sessions_of(archive: Annotated[Archive, Depends(opened_archive)]) -> SessionStore:
    return archive.sessions


def throttle_of(archive: Annotated[Archive, Depends(opened_archive)]) -> SigninThrottle:
    return archive.throttle


SettingsDep = Annotated[ConsoleSettings, Depends(settings_of)]
PagesDep = Annotated[Pages, Depends(pages_of)]
MetricsDep = Annotated[ConsoleMetrics, Depends(metrics_of)]
AuthenticatorDep = Annotated[Authenticator | None, Depends(authenticator_of)]
ProviderDep = Annotated[ProviderSignIn | None, Depends(provider_of)]
ActionsDep = Annotated[Actions, Depends(actions_of)]
SessionsDep = Annotated[SessionStore, Depends(sessions_of)]
ThrottleDep = Annotated[SigninThrottle, Depends(throttle_of)]


async def live_session(
    request: Request,
    archive: Annotated[Archive | None, Depends(archive_of)],
    console: Annotated[Console, Depends(console_of)],
) -> Session | None:
    """The request's session if it is live: not idle too long, not past its lifetime, and either its roles read
    again from the provider when due (:meth:`ProviderSignIn.keep_current`, which ends it when the read fails or
    leaves no role), or its named credential still configured with the same role (else the session is deleted:
    revoking a token ends its sessions). None without a session cookie, and while the archive is not open."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id or archive is None:
        return None
    session = await archive.sessions.touch(session_id)
    if session is None:
        return None
    metrics = console.metrics
    if session.provider is not None:
        if console.provider is None:  # single sign-on was turned off: its sessions end
            await archive.sessions.delete(session)
            return None
        kept = await console.provider.keep_current(session, archive.sessions)
        if kept is None:
            metrics.sessions_ended.labels("reread").inc()
        return kept
    authenticator = console.authenticator
    now_operator = authenticator.current(session.operator.name, session.credential) if authenticator else None
    if now_operator != session.operator:
        await archive.sessions.delete(session)
        metrics.sessions_ended.labels("revoked").inc()
        log.warning(
            "console session ended: its credential was revoked or its role changed",
            extra={"actor": session.operator.name},
        )
        return None
    return session


async def session_of(request: Request) -> Session | None:
    """:func:`live_session` outside a route (in an exception handler, where ``Depends`` does not reach)."""
    return await live_session(request, archive_of(request), console_of(request))


async def current_session(
    request: Request,
    session: Annotated[Session | None, Depends(live_session)],
    archive: Annotated[Archive | None, Depends(archive_of)],
) -> Session:
    """The live session, else SignedOut (the browser goes to the sign-in page). Counts, for the header's
    navigation, the four-eyes requests waiting for this person's decision (``request.state.waiting``)."""
    if session is None:
        raise SignedOut
    if archive is not None:
        request.state.waiting = await archive.actions.waiting_count(session.operator)
    return session


MaybeSession = Annotated[Session | None, Depends(live_session)]
CurrentSession = Annotated[Session, Depends(current_session)]


async def form_of(request: Request, settings: SettingsDep) -> FormData:
    """The request's form within the console's limits (:func:`services.console.forms.read_form`)."""
    return await read_form(request, max_fields=settings.max_form_fields, max_field_bytes=settings.max_form_field_bytes)


FormDep = Annotated[FormData, Depends(form_of)]


@dataclass(frozen=True)
class Posted:
    """A POST's live session and its form, checked (:class:`PostedBy`)."""

    session: Session
    form: FormData


class PostedBy:
    """The dependency of a POST that changes or discloses something: the session, and the role for ``action`` (if
    any), are checked before the form is read (SignedOut, Forbidden); the form must carry the session's CSRF token
    and come from the console's origin (else RefusedForm, counted)."""

    def __init__(self, action: ActionName | None) -> None:
        self.action = action

    async def __call__(
        self,
        request: Request,
        session: CurrentSession,
        settings: SettingsDep,
        metrics: MetricsDep,
        provider: ProviderDep,
    ) -> Posted:
        if self.action is not None:
            authorize(session.operator, self.action)
            if self.action in STEP_UP_ACTIONS:
                check_step_up(request, session, provider)
        form = await read_form(
            request, max_fields=settings.max_form_fields, max_field_bytes=settings.max_form_field_bytes
        )
        if not same_origin(request) or not same_token(field(form, "csrf"), session.csrf_token):
            metrics.refused_forms.inc()
            raise RefusedForm
        return Posted(session, form)


def page_of(request: Request) -> str:
    """The console page a request came from (its same-origin ``Referer``'s path), else its own path; never another
    site (``//elsewhere``)."""
    referer = request.headers.get("referer", "")
    origin = f"{request.url.scheme}://{request.url.netloc}"
    if referer.startswith(origin + "/"):
        path = "/" + referer[len(origin) + 1 :].split("?", 1)[0].split("#", 1)[0]
        if not path.startswith("//"):
            return path
    return request.url.path


def check_step_up(request: Request, session: Session, provider: ProviderSignIn | None) -> None:
    """StepUpNeeded when a step-up ``acr`` is configured and ``session`` has not got it (a session opened with a
    named token in the local demo has no provider to step up with, and is not asked)."""
    if provider is not None and session.provider is not None and provider.step_up_needed(session):
        raise StepUpNeeded(page_of(request) if request.method == "POST" else request.url.path)


class SteppedUp:
    """The dependency of a page whose purpose is a step-up action (the erasure page): the session, allowed
    ``action`` (Forbidden first: a reader is told the page is not theirs, not sent to step up), and stepped up."""

    def __init__(self, action: ActionName) -> None:
        self.action = action

    async def __call__(self, request: Request, session: CurrentSession, provider: ProviderDep) -> Session:
        authorize(session.operator, self.action)
        check_step_up(request, session, provider)
        return session
