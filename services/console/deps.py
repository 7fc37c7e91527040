"""What a console route depends on, taken from ``app.state`` through FastAPI's ``Depends``, typed.

Two things live on ``app.state``, both set by :func:`services.console.factory.create_console_app`:

- ``console`` (:class:`Console`): what the console is built with and keeps for its whole life (settings, pages,
  metrics, the sign-in seam);
- ``archive`` (:class:`Archive`): what its lifespan opens on the archive (the actions, the sessions, the sign-in
  throttle), None before it starts and after it stops.

A route asks for the piece it needs (``ActionsDep``, ``CurrentSession``…); a test mounts a router on a bare app and
replaces any of these functions with ``app.dependency_overrides``.

The session dependencies hold the console's rules: a session is live only while it is not idle too long, not past its
lifetime, and its credential is still configured with the same role; a POST that changes or discloses something
(:class:`PostedBy`) has its session and role checked before its form is read, and is refused without the session's
CSRF token or from another origin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData

from services.actions.layer import ActionName, Actions, authorize
from services.console.auth import Authenticator
from services.console.forms import RefusedForm, field, read_form, same_origin
from services.console.metrics import ConsoleMetrics
from services.console.pages import SESSION_COOKIE, Pages
from services.console.sessions import Session, SessionStore, same_token
from services.console.settings import ConsoleSettings
from services.console.throttle import SigninThrottle

log = logging.getLogger("wa_archive.console")


class SignedOut(Exception):
    """No live session: the browser is sent to the sign-in page."""


@dataclass(frozen=True, kw_only=True)
class Console:
    """What the console is built with, for its whole life (``app.state.console``)."""

    settings: ConsoleSettings
    pages: Pages
    metrics: ConsoleMetrics
    authenticator: Authenticator


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


def authenticator_of(console: Annotated[Console, Depends(console_of)]) -> Authenticator:
    return console.authenticator


def actions_of(archive: Annotated[Archive, Depends(opened_archive)]) -> Actions:
    return archive.actions


def sessions_of(archive: Annotated[Archive, Depends(opened_archive)]) -> SessionStore:
    return archive.sessions


def throttle_of(archive: Annotated[Archive, Depends(opened_archive)]) -> SigninThrottle:
    return archive.throttle


SettingsDep = Annotated[ConsoleSettings, Depends(settings_of)]
PagesDep = Annotated[Pages, Depends(pages_of)]
MetricsDep = Annotated[ConsoleMetrics, Depends(metrics_of)]
AuthenticatorDep = Annotated[Authenticator, Depends(authenticator_of)]
ActionsDep = Annotated[Actions, Depends(actions_of)]
SessionsDep = Annotated[SessionStore, Depends(sessions_of)]
ThrottleDep = Annotated[SigninThrottle, Depends(throttle_of)]


async def live_session(
    request: Request,
    archive: Annotated[Archive | None, Depends(archive_of)],
    authenticator: AuthenticatorDep,
    metrics: MetricsDep,
) -> Session | None:
    """The request's session if it is live: not idle too long, not past its lifetime, and its credential still
    configured with the same role (else the session is deleted: revoking a token ends its sessions). None without a
    session cookie, and while the archive is not open."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id or archive is None:
        return None
    session = await archive.sessions.touch(session_id)
    if session is None:
        return None
    now_operator = authenticator.current(session.operator.name, session.credential)
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
    console = console_of(request)
    return await live_session(request, archive_of(request), console.authenticator, console.metrics)


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
        self, request: Request, session: CurrentSession, settings: SettingsDep, metrics: MetricsDep
    ) -> Posted:
        if self.action is not None:
            authorize(session.operator, self.action)
        form = await read_form(
            request, max_fields=settings.max_form_fields, max_field_bytes=settings.max_form_field_bytes
        )
        if not same_origin(request) or not same_token(field(form, "csrf"), session.csrf_token):
            metrics.refused_forms.inc()
            raise RefusedForm
        return Posted(session, form)
