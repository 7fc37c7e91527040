"""Single sign-on through the OpenID Connect provider: ``GET /oidc/signin``, ``GET /oidc/step-up``,
``GET /oidc/callback``, ``POST /oidc/backchannel-logout`` (services/console/oidc.py has the flow and its rules).

The callback answers a small page that moves on to the page the person was going to (``<meta http-equiv=refresh>``)
rather than a redirect: the provider's redirect is a cross-site navigation, and a browser sends no SameSite=Strict
cookie (the session's) along a redirect chain that began on another site; the page's own navigation is same-site.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from services.console.deps import (
    Archive,
    CurrentSession,
    MetricsDep,
    PagesDep,
    ProviderDep,
    SessionsDep,
    SettingsDep,
    opened_archive,
)
from services.console.i18n import known_locale, translator, zone
from services.console.oidc import (
    CALLBACK_PATH,
    PENDING_COOKIE,
    PENDING_COOKIE_PATH,
    PENDING_MAX_AGE_S,
    PendingSignIn,
    ProviderSignIn,
    SignInFailed,
    console_url,
)
from services.console.pages import SESSION_COOKIE, locale_of, set_cookie
from services.console.routers.signin import safe_back
from services.core.oidc import ProviderUnavailable, TokenRefused
from services.core.refusals import NotFound

log = logging.getLogger("wa_archive.console")

router = APIRouter()


def configured(provider: ProviderSignIn | None) -> ProviderSignIn:
    if provider is None:
        raise NotFound("single sign-on is not configured")
    return provider


async def to_provider(
    request: Request, provider: ProviderSignIn, *, back: str, locale: str, timezone: str, step_up: bool, secure: bool
) -> Response:
    url, pending = await provider.start(
        redirect_uri=console_url(request, provider, CALLBACK_PATH),
        back=back,
        locale=locale,
        timezone=timezone,
        step_up=step_up,
    )
    response = RedirectResponse(url, status_code=303)
    # SameSite=Lax: the provider's redirect back is a cross-site top-level GET, which Strict would strip.
    response.set_cookie(
        PENDING_COOKIE,
        pending.cookie(),
        max_age=PENDING_MAX_AGE_S,
        path=PENDING_COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=secure,
    )
    return response


def unavailable(request: Request, pages: PagesDep) -> Response:
    t = translator(locale_of(request, None))
    message = t("The identity provider does not answer. Try again in a moment.")
    return pages.render(request, "error.html", None, status=503, message=message)


@router.get("/oidc/signin")
async def oidc_signin(
    request: Request,
    provider: ProviderDep,
    settings: SettingsDep,
    pages: PagesDep,
    back: str | None = None,
    timezone: str | None = None,
) -> Response:
    """To the provider's sign-in page; back to ``back`` (a console path) once signed in."""
    found = configured(provider)
    try:
        return await to_provider(
            request,
            found,
            back=safe_back(back),
            locale=locale_of(request, None),
            timezone=zone(timezone, settings.default_timezone),
            step_up=False,
            secure=settings.secure_cookies,
        )
    except ProviderUnavailable as exc:
        log.warning("console sign-in: the identity provider is unavailable: %s", exc)
        return unavailable(request, pages)


@router.get("/oidc/step-up")
async def oidc_step_up(
    request: Request,
    session: CurrentSession,
    provider: ProviderDep,
    settings: SettingsDep,
    pages: PagesDep,
    back: str | None = None,
) -> Response:
    """To the provider to step up (``acr_values``); back to ``back`` in a session that has the new ``acr``."""
    found = configured(provider)
    try:
        return await to_provider(
            request,
            found,
            back=safe_back(back),
            locale=session.locale,
            timezone=session.timezone,
            step_up=True,
            secure=settings.secure_cookies,
        )
    except ProviderUnavailable as exc:
        log.warning("console step-up: the identity provider is unavailable: %s", exc)
        return unavailable(request, pages)


@router.get(CALLBACK_PATH, response_class=HTMLResponse)
async def oidc_callback(
    request: Request,
    provider: ProviderDep,
    settings: SettingsDep,
    pages: PagesDep,
    metrics: MetricsDep,
    archive: Annotated[Archive, Depends(opened_archive)],
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> Response:
    """The provider's answer: a session for the person it signed in, or a page that says why not."""
    found = configured(provider)
    pending = PendingSignIn.from_cookie(request.cookies.get(PENDING_COOKIE))
    # What the cookie says is checked again as it was when made: a known language, a known zone, a console path.
    locale = (known_locale(pending.locale) if pending else None) or locale_of(request, None)
    t = translator(locale)

    def failed(status: int, message: str) -> Response:
        page = pages.render(request, "signin_failed.html", None, status=status, locale=locale, message=message)
        page.delete_cookie(PENDING_COOKIE, path=PENDING_COOKIE_PATH)
        return page

    if pending is None or not pending.answers(state):
        metrics.sign_ins.labels("failed").inc()
        log.warning("console sign-in refused: its state is not the pending sign-in's (expired, or started elsewhere)")
        return failed(400, t("This sign-in has expired or was started in another window. Sign in again."))
    if error is not None or code is None:
        metrics.sign_ins.labels("failed").inc()
        log.warning("console sign-in: the provider answered %s", (error or "no code")[:64])
        if pending.acr is not None:
            return failed(403, t("The additional verification was not completed. The action needs it."))
        return failed(401, t("The identity provider did not sign you in."))
    try:
        signed_in = await found.finish(
            code=code, pending=pending, redirect_uri=console_url(request, found, CALLBACK_PATH)
        )
    except SignInFailed as exc:
        metrics.sign_ins.labels("failed").inc()
        log.warning("console sign-in refused: %s", exc.reason)
        if pending.acr is not None and exc.reason.startswith("step-up"):
            return failed(403, t("The additional verification was not completed. The action needs it."))
        return failed(401, t("The identity provider's answer could not be verified. Sign in again."))
    except ProviderUnavailable as exc:
        log.warning("console sign-in: the identity provider is unavailable: %s", exc)
        return unavailable(request, pages)
    operator = signed_in.operator
    if operator is None:
        metrics.sign_ins.labels("no_role").inc()
        log.warning("console sign-in without a mapped role", extra={"actor": signed_in.identity.username})
        message = t(
            "You are signed in as %(name)s, but you have no role in the archive. Ask your administrator to give you "
            "the reader or the data protection officer role.",
            name=signed_in.identity.username,
        )
        return failed(403, message)
    old = request.cookies.get(SESSION_COOKIE)
    if old:  # a step-up replaces the session (a new id after a gain of privilege)
        previous = await archive.sessions.touch(old)
        if previous is not None:
            await archive.sessions.delete(previous)
    session_id, _session = await archive.sessions.create(
        operator,
        credential=b"",
        locale=locale,
        timezone=zone(pending.timezone, settings.default_timezone),
        provider=signed_in.link,
    )
    metrics.sign_ins.labels("accepted").inc()
    log.info(
        "console sign-in through the identity provider",
        extra={"actor": operator.name, "role": operator.role, "stepped_up": pending.acr is not None},
    )
    page = pages.render(request, "signed_in.html", None, locale=locale, back=safe_back(pending.back))
    set_cookie(page, SESSION_COOKIE, session_id, secure=settings.secure_cookies)
    page.delete_cookie(PENDING_COOKIE, path=PENDING_COOKIE_PATH)
    return page


@router.post("/oidc/backchannel-logout")
async def backchannel_logout(
    provider: ProviderDep,
    sessions: SessionsDep,
    metrics: MetricsDep,
    logout_token: Annotated[str, Form(max_length=16 * 1024)],
) -> Response:
    """OpenID Connect Back-Channel Logout 1.0: the provider posts a logout token; the sessions it names are
    deleted. 200 once done (also when no session matched); 400 ``invalid_request`` for a token that does not check
    out; 503 when the provider's keys cannot be read."""
    found = configured(provider)
    headers = {"cache-control": "no-store"}
    try:
        ended = await found.logout(logout_token, sessions)
    except TokenRefused as exc:
        log.warning("back-channel logout refused: %s", exc.reason)
        return JSONResponse({"error": "invalid_request"}, status_code=400, headers=headers)
    except ProviderUnavailable as exc:
        log.warning("back-channel logout: the identity provider's keys are unavailable: %s", exc)
        return JSONResponse({"error": "temporarily_unavailable"}, status_code=503, headers=headers)
    metrics.sessions_ended.labels("logout").inc(ended)
    log.info("back-channel logout: %d console session(s) ended", ended)
    return Response(status_code=200, headers=headers)
