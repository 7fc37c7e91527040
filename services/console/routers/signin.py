"""Signing in and out, and choosing the language: ``GET /signin``, ``POST /signin``, ``POST /signout``,
``POST /language``.

``GET /signin`` offers the identity provider (services/console/routers/oidc.py does the rest) and, in the local demo
only, the form of the named tokens. That form has its own double-submit token (a cookie and a form field), is
throttled per name and per client address with a lockout (services/console/throttle.py), and counts every outcome;
a failed attempt is logged with the account name only when it is one (a mistyped name may be a token).

``POST /signout`` deletes the session and, for a session opened through the provider, sends the browser to the
provider's logout (RP-initiated: its session ends too) and back to the sign-in page.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from services.console.deps import (
    Archive,
    AuthenticatorDep,
    FormDep,
    MaybeSession,
    MetricsDep,
    PagesDep,
    Posted,
    PostedBy,
    ProviderDep,
    SessionsDep,
    SettingsDep,
    ThrottleDep,
    archive_of,
    opened_archive,
)
from services.console.errors import count_refusal
from services.console.forms import RefusedForm, field, same_origin
from services.console.i18n import duration, known_locale, negotiate, translator, zone
from services.console.oidc import console_url
from services.console.pages import LANGUAGE_COOKIE, SESSION_COOKIE, SIGNIN_COOKIE, Pages, locale_of, set_cookie
from services.console.sessions import new_secret, same_token
from services.core.refusals import NotFound

log = logging.getLogger("wa_archive.console")

router = APIRouter()

SIGNIN_TOKEN_MAX_AGE_S = 3600  # the sign-in form's token: an hour to fill in the form
LANGUAGE_MAX_AGE_S = 365 * 86400


def signin_form(
    request: Request,
    pages: Pages,
    *,
    secure: bool,
    status: int = 200,
    notice: str | None,
    error: str | None,
    named: bool = True,
    provider: bool = False,
    back: str = "/search",
) -> Response:
    """The sign-in page: the provider's button when ``provider``, the named tokens' form with a fresh form token
    (set as its cookie too) when ``named``."""
    token = new_secret() if named else ""
    page = pages.render(
        request,
        "signin.html",
        None,
        status=status,
        signin_token=token,
        notice=notice,
        error=error,
        named=named,
        provider=provider,
        back=back,
    )
    if named:
        set_cookie(page, SIGNIN_COOKIE, token, secure=secure, max_age=SIGNIN_TOKEN_MAX_AGE_S)
    return page


@router.get("/signin", response_class=HTMLResponse)
async def signin_page(
    request: Request,
    pages: PagesDep,
    settings: SettingsDep,
    authenticator: AuthenticatorDep,
    provider: ProviderDep,
    ended: str | None = None,
    out: str | None = None,
) -> Response:
    t = translator(locale_of(request, None))
    notice = t("Your session has ended. Sign in again.") if ended else t("You are signed out.") if out else None
    return signin_form(
        request,
        pages,
        secure=settings.secure_cookies,
        notice=notice,
        error=None,
        named=authenticator is not None,
        provider=provider is not None,
    )


@router.post("/signin")
async def signin(
    request: Request,
    form: FormDep,  # first: read before anything else is looked at
    settings: SettingsDep,
    pages: PagesDep,
    metrics: MetricsDep,
    authenticator: AuthenticatorDep,
    throttle: ThrottleDep,
    sessions: SessionsDep,
) -> Response:
    if authenticator is None:  # single sign-on only: there are no named tokens to check
        raise NotFound("no sign-in with a named token here")
    expected = request.cookies.get(SIGNIN_COOKIE)
    if not same_origin(request) or expected is None or not same_token(field(form, "signin_token"), expected):
        metrics.refused_forms.inc()
        raise RefusedForm
    name = field(form, "name") or ""
    # The peer, or the client the trusted proxy names (ConsoleSettings.forwarded_allow_ips).
    address = request.client.host if request.client else ""
    locale = locale_of(request, None)
    t = translator(locale)
    actor = name if authenticator.known(name) else None  # a mistyped name may be a token: not logged
    admission = await throttle.attempt(name, address, datetime.now(UTC))
    if not admission.admitted:
        metrics.sign_ins.labels("locked").inc()
        count_refusal(metrics, 429, "locked", f"sign-in locked out by {admission.locked_by}", actor)
        # In whole minutes: a lockout's seconds would read as a countdown nobody watches.
        wait = duration(60 * max(1, round(admission.retry_after_s / 60)), locale)
        error = t("Too many sign-in attempts. Try again in %(duration)s.", duration=wait)
        page = signin_form(
            request, pages, secure=settings.secure_cookies, status=429, notice=None, error=error, provider=False
        )
        page.headers["retry-after"] = str(max(1, round(admission.retry_after_s)))
        return page
    credential = await authenticator.authenticate(name, field(form, "token") or "")
    if credential is None:
        metrics.sign_ins.labels("refused").inc()
        count_refusal(metrics, 401, "credentials", "sign-in with a wrong name or token", actor)
        error = t("The name or the token is wrong.")
        return signin_form(request, pages, secure=settings.secure_cookies, status=401, notice=None, error=error)
    await throttle.succeeded(name, address)
    operator = credential.operator
    timezone = zone(field(form, "timezone"), settings.default_timezone)
    session_id, _session = await sessions.create(
        operator, credential=credential.fingerprint, locale=locale, timezone=timezone
    )
    metrics.sign_ins.labels("accepted").inc()
    log.info("console sign-in", extra={"actor": operator.name, "role": operator.role})
    response = RedirectResponse("/search", status_code=303)
    set_cookie(response, SESSION_COOKIE, session_id, secure=settings.secure_cookies)
    response.delete_cookie(SIGNIN_COOKIE, path="/")
    return response


@router.post("/signout")
async def signout(
    request: Request,
    posted: Annotated[Posted, Depends(PostedBy(None))],
    sessions: SessionsDep,
    provider: ProviderDep,
) -> Response:
    await sessions.delete(posted.session)
    where = "/signin?out=1"
    if provider is not None and posted.session.provider is not None:
        # The provider's session ends too, and its logout page sends the browser back to the sign-in page.
        where = await provider.end_session_url(posted.session, console_url(request, provider, "/signin?out=1")) or where
    response = RedirectResponse(where, status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def safe_back(back: str | None) -> str:
    """Where to return after choosing a language or signing in: a path of the console only, else ``/search``.
    Browsers read ``//elsewhere``, ``/\\elsewhere`` and paths with a tab or newline inside (which they strip) as
    another site: such a path is refused, as is anything with a scheme or a host."""
    if not back or not back.startswith("/") or back[1:2] in ("/", "\\"):
        return "/search"
    if "\\" in back or any(ord(c) < 0x21 or ord(c) == 0x7F for c in back):
        return "/search"
    parts = urlsplit(back)
    if parts.scheme or parts.netloc:
        return "/search"
    return back


@router.post("/language")
async def language(
    request: Request,
    form: FormDep,  # first: the session is looked up after the form is read
    session: MaybeSession,
    settings: SettingsDep,
    metrics: MetricsDep,
    archive: Annotated[Archive | None, Depends(archive_of)],
) -> Response:
    locale = known_locale(field(form, "locale")) or negotiate(request.headers.get("accept-language"))
    back = safe_back(field(form, "back"))
    if session is not None:
        if not same_token(field(form, "csrf"), session.csrf_token):
            metrics.refused_forms.inc()
            raise RefusedForm
        await opened_archive(archive).sessions.set_locale(session, locale)
    response = RedirectResponse(back, status_code=303)
    set_cookie(response, LANGUAGE_COOKIE, locale, secure=settings.secure_cookies, max_age=LANGUAGE_MAX_AGE_S)
    return response
