"""The review console: server-rendered pages over the action layer (services/actions/layer.py).

A community manager signs in, searches (metadata only), gives a reason, and reads the conversation as a phone shows
it; the data protection officer also manages holds, erasure requests, the audit log and the retention dry run.
The console is one more adapter: every read, search and change is an :class:`Actions` call, which checks the role,
writes the audit row and counts the metrics, exactly as for the admin API and the CLI.

Safe by construction:
- every page is rendered by Jinja2 with autoescape on, so a message's ``<script>`` is text;
- every response carries a Content-Security-Policy without inline scripts or styles (:data:`SECURITY_HEADERS`),
  and pages ``Cache-Control: no-store``;
- every form that changes something carries the session's CSRF token, and a POST whose ``Origin`` is another site
  is refused; the sign-in form has its own double-submit token;
- search terms, a person's number and reasons travel in POST bodies, never in URLs; the only identifier in a URL
  is a media file's event id (a hash), under the session of someone who gave a reason for its conversation.

Sign-in that holds:
- bodies and forms are capped before they are read (``max_body_bytes``, ``max_form_fields``,
  ``max_form_field_bytes``: 413); a POST of a signed-in page checks the session and the role its action needs
  before its form is read;
- sign-in attempts are throttled per name and per client address, with a lockout (services/console/throttle.py);
  every failed sign-in and every refusal is counted (services/console/metrics.py) and logged, with the account
  name only when it is one (never the token);
- a session ends when idle (``idle_timeout_s``), at its absolute lifetime (``session_lifetime_s``), and at the
  first request after the credential that opened it was removed, replaced or given another role.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from prometheus_client import CollectorRegistry
from starlette.datastructures import FormData, MutableHeaders
from starlette.exceptions import HTTPException

from services.actions.access import ArchiveAccess
from services.actions.layer import (
    ActionName,
    Actions,
    MediaFile,
    authorize,
)
from services.console.audit_view import audit_details
from services.console.auth import Authenticator, NamedCredentials
from services.console.i18n import LOCALES, Formatter, known_locale, negotiate, translator, zone
from services.console.metrics import ConsoleMetrics, RefusalReason
from services.console.sessions import OpenedConversation, Session, SessionStore, new_secret, same_token
from services.console.settings import ConsoleSettings
from services.console.throttle import SigninThrottle, ThrottlePolicy
from services.console.timeline import Page, bubbles
from services.core.audit import AuditFilter, require_reason
from services.core.http import ASGIApp, BodyLimit, Message, Receive, Scope, Send
from services.core.ops_http import OpsServer, ops_app
from services.core.reader import ContainerError, RecordTampered
from services.core.refusals import ActionRefused, Forbidden, InvalidRequest, NotFound, ReasonRequired
from services.governance.grounds import REFUSAL_GROUNDS
from services.governance.holds import HoldScope
from services.governance.metrics import RetentionMetrics
from services.retention.settings import RetentionSettings
from services.review.search import IndexHit, SearchFilter

log = logging.getLogger("wa_archive.console")

SESSION_COOKIE: Final = "wa_console_session"
SIGNIN_COOKIE: Final = "wa_console_signin"
LANGUAGE_COOKIE: Final = "wa_console_lang"
SEARCH_LIMIT: Final = 500
AUDIT_LIMIT: Final = 200
MEDIA_INLINE: Final = ("image/jpeg", "image/png", "image/webp", "image/gif", "audio/", "video/")
KINDS: Final = ("message", "echo", "history", "outbound", "status", "call")
TYPES: Final = (
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "button",
    "order",
    "reaction",
    "template",
    "edit",
    "revoke",
)
HOLD_SCOPES: Final[tuple[HoldScope, ...]] = ("contact", "conversation", "group", "phone_number", "waba")

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
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


class SecurityHeaders:
    """Pure ASGI middleware: :data:`SECURITY_HEADERS` on every response, ``Cache-Control: no-store`` on all but the
    static files. Pure ASGI like BodyLimit: it touches the response's start only, never the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope["path"]).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if not static:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def package_dir(name: str) -> Path:
    return Path(str(resources.files("services.console") / name))


class RefusedForm(Exception):
    """A POST without the session's CSRF token or from another origin: nothing is done (403)."""


class BadForm(InvalidRequest):
    """A form field the console cannot read (a date that is not YYYY-MM-DD, an unknown choice): 400."""


class SignedOut(Exception):
    """No live session: the browser is sent to the sign-in page."""


class FormTooLarge(Exception):
    """A form with more fields, or a longer field, than the console's forms have: 413, nothing done."""


def parse_day(value: str | None, tz: ZoneInfo, *, end: bool) -> datetime | None:
    """A form's YYYY-MM-DD as the start (or the end) of that day in the viewer's time zone."""
    if not value:
        return None
    day = date.fromisoformat(value)
    moment = datetime.combine(day, time.min, tz)
    return moment + timedelta(days=1, microseconds=-1) if end else moment


def field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def direction_of(kind: str) -> str:
    return "sent" if kind in ("echo", "outbound") else "received" if kind == "message" else kind


def group_hits(hits: list[IndexHit]) -> list[tuple[str, list[IndexHit]]]:
    """Search hits by conversation (pseudonym), in the order each conversation first appears."""
    groups: dict[str, list[IndexHit]] = {}
    for hit in hits:
        groups.setdefault(hit.subject_ref or "", []).append(hit)
    return list(groups.items())


async def media_chunks(found: MediaFile) -> AsyncIterator[bytes]:
    """A media file's chunks for the response; a file found corrupt midway ends the response early (the browser
    sees fewer bytes than announced) and is logged, without the file's name or anything of its content."""
    try:
        async for chunk in found.chunks:
            yield chunk
    except (RecordTampered, ContainerError) as exc:
        log.error("media %s failed verification while being served: %s", found.event_id, type(exc).__name__)
        raise
    finally:
        await found.chunks.aclose()


def create_console_app(
    settings: ConsoleSettings,
    retention: RetentionSettings,
    open_access: Callable[[], Awaitable[ArchiveAccess]],
    *,
    authenticator: Authenticator | None = None,
    registry: CollectorRegistry | None = None,
    serve_ops: bool = True,
) -> FastAPI:
    registry = registry or CollectorRegistry()
    metrics = RetentionMetrics(registry)
    console_metrics = ConsoleMetrics(registry)
    authenticator = authenticator or NamedCredentials(retention)
    state: dict[str, Any] = {}
    templates = Environment(
        loader=FileSystemLoader(package_dir("templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        access = await open_access()
        state["actions"] = Actions(access, metrics)
        state["sessions"] = SessionStore(access.pool, settings.idle_timeout_s, settings.session_lifetime_s)
        state["throttle"] = SigninThrottle(
            access.pool,
            retention.keys.pepper_bytes(),
            by_name=ThrottlePolicy(
                max_attempts=settings.signin_attempts_per_name,
                window_s=settings.signin_window_s,
                lockout_s=settings.signin_lockout_s,
            ),
            by_address=ThrottlePolicy(
                max_attempts=settings.signin_attempts_per_address,
                window_s=settings.signin_window_s,
                lockout_s=settings.signin_lockout_s,
            ),
        )
        ops = OpsServer(ops_app(registry, lambda: "actions" in state), settings.host, settings.ops_port)
        if serve_ops:
            await ops.start()
        try:
            yield
        finally:
            if serve_ops:
                await ops.stop()
            state.clear()
            await access.close()

    app = FastAPI(title="wa-archive review console", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=package_dir("static")), name="static")
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_body_bytes, on_refused=lambda: refused(413, "body", "request body too large")
    )

    def refused(status: int, reason: RefusalReason, what: str, actor: str | None = None) -> None:
        """Count and log a refusal: what was refused and why, the account name when there is one; never a token,
        a form's content or the client's address."""
        console_metrics.refused(status, reason)
        log.warning("console request refused: %d (%s): %s", status, reason, what, extra={"actor": actor})

    app.add_middleware(SecurityHeaders)

    def actions() -> Actions:
        found: Actions = state["actions"]
        return found

    def sessions() -> SessionStore:
        found: SessionStore = state["sessions"]
        return found

    def throttle() -> SigninThrottle:
        found: SigninThrottle = state["throttle"]
        return found

    async def read_form(request: Request) -> FormData:
        """The request's form within the console's limits (fields, field size; the body is capped by BodyLimit),
        else FormTooLarge."""
        try:
            return await request.form(
                max_files=0, max_fields=settings.max_form_fields, max_part_size=settings.max_form_field_bytes
            )
        except HTTPException as exc:
            # Starlette's form parser refuses a form past a limit with 400 and says which limit.
            raise FormTooLarge(str(exc.detail)) from None

    def locale_of(request: Request, session: Session | None) -> str:
        if session is not None:
            return session.locale
        return known_locale(request.cookies.get(LANGUAGE_COOKIE)) or negotiate(request.headers.get("accept-language"))

    def render(
        request: Request,
        template: str,
        session: Session | None,
        *,
        status: int = 200,
        locale: str | None = None,
        **context: Any,
    ) -> HTMLResponse:
        locale = locale or locale_of(request, session)
        fmt = Formatter(locale, session.timezone if session else settings.default_timezone)
        page = templates.get_template(template).render(
            t=translator(locale),
            fmt=fmt,
            locale=locale,
            locales=LOCALES,
            session=session,
            is_dpo=session is not None and session.operator.role == "dpo",
            csrf=session.csrf_token if session else "",
            path=request.url.path,
            **context,
        )
        return HTMLResponse(page, status_code=status)

    async def live_session(request: Request) -> Session | None:
        """The request's session if it is live: not idle too long, not past its lifetime, and its credential still
        configured with the same role (else the session is deleted: revoking a token ends its sessions)."""
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id or "sessions" not in state:
            return None
        session = await sessions().touch(session_id)
        if session is None:
            return None
        now_operator = authenticator.current(session.operator.name, session.credential)
        if now_operator != session.operator:
            await sessions().delete(session)
            console_metrics.sessions_ended.labels("revoked").inc()
            log.warning(
                "console session ended: its credential was revoked or its role changed",
                extra={"actor": session.operator.name},
            )
            return None
        return session

    async def current(request: Request, action: ActionName | None = None) -> Session:
        """The live session, allowed ``action`` if one is given (Forbidden, before any form is read)."""
        session = await live_session(request)
        if session is None:
            raise SignedOut
        if action is not None:
            authorize(session.operator, action)
        return session

    def same_origin(request: Request) -> bool:
        """False when the browser says the form comes from another site (``Origin``); a client that sends no
        ``Origin`` still needs the token."""
        origin = request.headers.get("origin")
        if origin is None:
            return True
        return origin != "null" and urlsplit(origin).netloc == request.headers.get("host")

    async def posted(request: Request, action: ActionName | None = None) -> tuple[Session, FormData]:
        """The session and form of a POST that changes or discloses something: the session and the role for
        ``action`` are checked before the form is read; refused without its CSRF token."""
        session = await current(request, action)
        form = await read_form(request)
        if not same_origin(request) or not same_token(field(form, "csrf"), session.csrf_token):
            console_metrics.refused_forms.inc()
            raise RefusedForm
        return session, form

    @app.exception_handler(SignedOut)
    async def signed_out(_request: Request, _exc: Exception) -> Response:
        return RedirectResponse("/signin?ended=1", status_code=303)

    @app.exception_handler(FormTooLarge)
    async def form_too_large(request: Request, exc: Exception) -> Response:
        refused(413, "body", f"form too large: {exc}")
        return Response(f"413: the form is too large: {exc}\n", status_code=413, media_type="text/plain")

    @app.exception_handler(RefusedForm)
    async def refused_form(request: Request, _exc: Exception) -> Response:
        session = await _maybe_session(request)
        refused(
            403, "form", "form without its token or from another origin", session.operator.name if session else None
        )
        message = translator(locale_of(request, session))(
            "The form has expired. Go back, reload the page and try again."
        )
        return render(request, "error.html", session, status=403, message=message)

    @app.exception_handler(ActionRefused)
    async def action_refused(request: Request, exc: Exception) -> Response:
        """Every refusal of the action layer (and a form the console cannot read), with its own status."""
        assert isinstance(exc, ActionRefused)  # registered for this base only
        session = await _maybe_session(request)
        t = translator(locale_of(request, session))
        if isinstance(exc, Forbidden):
            refused(403, "role", f"{request.url.path} needs another role", session.operator.name if session else None)
            message = t("This page is for the data protection officer.")
        elif isinstance(exc, NotFound):
            message = t("Not found.")
        else:
            message = t("The request was refused: {why}", why=str(exc))
        return render(request, "error.html", session, status=exc.http_status, message=message)

    async def _maybe_session(request: Request) -> Session | None:
        return await live_session(request)

    def set_cookie(response: Response, name: str, value: str, *, max_age: int | None = None) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            httponly=True,
            samesite="strict",
            secure=settings.secure_cookies,
            path="/",
        )

    # ------------------------------------------------------------------ sign-in
    @app.get("/signin", response_class=HTMLResponse)
    async def signin_page(request: Request, ended: str | None = None, out: str | None = None) -> Response:
        token = new_secret()
        t = translator(locale_of(request, None))
        notice = t("Your session has ended. Sign in again.") if ended else t("You are signed out.") if out else None
        response = render(request, "signin.html", None, signin_token=token, notice=notice, error=None)
        set_cookie(response, SIGNIN_COOKIE, token, max_age=3600)
        return response

    def signin_again(request: Request, status: int, error: str) -> Response:
        """The sign-in page again, with ``error`` and a fresh form token."""
        token = new_secret()
        page = render(request, "signin.html", None, status=status, signin_token=token, notice=None, error=error)
        set_cookie(page, SIGNIN_COOKIE, token, max_age=3600)
        return page

    @app.post("/signin")
    async def signin(request: Request) -> Response:
        form = await read_form(request)
        expected = request.cookies.get(SIGNIN_COOKIE)
        if not same_origin(request) or expected is None or not same_token(field(form, "signin_token"), expected):
            console_metrics.refused_forms.inc()
            raise RefusedForm
        name = field(form, "name") or ""
        # The peer, or the client the trusted proxy names (ConsoleSettings.forwarded_allow_ips).
        address = request.client.host if request.client else ""
        locale = locale_of(request, None)
        t = translator(locale)
        actor = name if authenticator.known(name) else None  # a mistyped name may be a token: not logged
        admission = await throttle().attempt(name, address, datetime.now(UTC))
        if not admission.admitted:
            console_metrics.sign_ins.labels("locked").inc()
            refused(429, "locked", f"sign-in locked out by {admission.locked_by}", actor)
            minutes = max(1, round(admission.retry_after_s / 60))
            page = signin_again(
                request, 429, t("Too many sign-in attempts. Try again in {minutes} minutes.", minutes=minutes)
            )
            page.headers["retry-after"] = str(max(1, round(admission.retry_after_s)))
            return page
        credential = await authenticator.authenticate(name, field(form, "token") or "")
        if credential is None:
            console_metrics.sign_ins.labels("refused").inc()
            refused(401, "credentials", "sign-in with a wrong name or token", actor)
            return signin_again(request, 401, t("The name or the token is wrong."))
        await throttle().succeeded(name, address)
        operator = credential.operator
        timezone = zone(field(form, "timezone"), settings.default_timezone)
        session_id, _session = await sessions().create(
            operator, credential=credential.fingerprint, locale=locale, timezone=timezone
        )
        console_metrics.sign_ins.labels("accepted").inc()
        log.info("console sign-in", extra={"actor": operator.name, "role": operator.role})
        response = RedirectResponse("/search", status_code=303)
        set_cookie(response, SESSION_COOKIE, session_id)
        response.delete_cookie(SIGNIN_COOKIE, path="/")
        return response

    @app.post("/signout")
    async def signout(request: Request) -> Response:
        session, _form = await posted(request)
        await sessions().delete(session)
        response = RedirectResponse("/signin?out=1", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.post("/language")
    async def language(request: Request) -> Response:
        form = await read_form(request)
        locale = known_locale(field(form, "locale")) or negotiate(request.headers.get("accept-language"))
        back = field(form, "back") or "/search"
        if not back.startswith("/") or back.startswith("//"):
            back = "/search"
        session = await _maybe_session(request)
        if session is not None:
            if not same_token(field(form, "csrf"), session.csrf_token):
                console_metrics.refused_forms.inc()
                raise RefusedForm
            await sessions().set_locale(session, locale)
        response = RedirectResponse(back, status_code=303)
        set_cookie(response, LANGUAGE_COOKIE, locale, max_age=365 * 86400)
        return response

    # ------------------------------------------------------------------ search
    @app.get("/")
    async def home() -> Response:
        return RedirectResponse("/search", status_code=303)

    @app.get("/search", response_class=HTMLResponse)
    async def search_page(request: Request) -> Response:
        session = await current(request)
        authorize(session.operator, "search")
        return render(request, "search.html", session, query={}, groups=None, kinds=KINDS, types=TYPES, error=None)

    @app.post("/search", response_class=HTMLResponse)
    async def search(request: Request) -> Response:
        session, form = await posted(request, "search")
        tz = ZoneInfo(session.timezone)
        query_form = {
            name: field(form, name) or ""
            for name in ("keywords", "contact", "phone_number_id", "since", "until", "kind", "type")
        }
        query_form["deleted_only"] = "1" if field(form, "deleted_only") else ""
        query_form["edited_only"] = "1" if field(form, "edited_only") else ""
        try:
            since = parse_day(field(form, "since"), tz, end=False)
            until = parse_day(field(form, "until"), tz, end=True)
        except ValueError:
            t = translator(session.locale)
            return render(
                request,
                "search.html",
                session,
                status=400,
                query=query_form,
                groups=None,
                kinds=KINDS,
                types=TYPES,
                error=t("Give the dates as YYYY-MM-DD."),
            )
        kind = field(form, "kind")
        kind_type = field(form, "type")
        query = SearchFilter(
            phone_number_id=field(form, "phone_number_id"),
            contact=field(form, "contact"),
            since=since,
            until=until,
            kind=kind if kind in KINDS else None,
            type=kind_type if kind_type in TYPES else None,
            deleted_only=bool(field(form, "deleted_only")),
            edited_only=bool(field(form, "edited_only")),
            limit=SEARCH_LIMIT,
            keywords=(field(form, "keywords") or None),
        )
        hits = await actions().search(session.operator, query)
        return render(
            request,
            "search.html",
            session,
            query=query_form,
            groups=group_hits(hits),
            hit_count=len(hits),
            truncated=len(hits) >= SEARCH_LIMIT,
            limit=SEARCH_LIMIT,
            direction_of=direction_of,
            kinds=KINDS,
            types=TYPES,
            error=None,
        )

    # ------------------------------------------------------------------ a conversation, after a reason
    async def show_conversation(
        request: Request, session: Session, subject_ref: str, opened: OpenedConversation, form: Mapping[str, str | None]
    ) -> Response:
        keywords = form.get("keywords")
        page_number = form.get("page")
        found = await actions().conversation_page(
            session.operator,
            subject_ref=subject_ref,
            reason=opened.audit_reason(),
            page_size=settings.page_size,
            page=int(page_number) if page_number and page_number.isdigit() else None,
            anchor=None if page_number else form.get("event_id"),
            keywords=None if page_number else keywords,
        )
        if tuple(found.subject_refs) != opened.subject_refs:
            opened = OpenedConversation(opened.reason, opened.case_ref, tuple(found.subject_refs))
            await sessions().remember_reason(session, subject_ref, opened)
        page = Page(
            bubbles(found.messages, frozenset(found.matched), found.quoted),
            found.number,
            found.count,
            found.first,
            found.total,
            found.anchor,
        )
        return render(
            request,
            "conversation.html",
            session,
            subject_ref=subject_ref,
            opened=opened,
            page=page,
            shredded=found.shredded_records,
            keywords=keywords or "",
            matched_count=len(found.matched),
        )

    def conversation_form(form: FormData) -> dict[str, str | None]:
        return {name: field(form, name) for name in ("subject_ref", "event_id", "keywords", "page")}

    def reason_page(
        request: Request, session: Session, values: Mapping[str, str | None], *, error: str | None, status: int = 200
    ) -> Response:
        return render(request, "reason.html", session, status=status, values=values, error=error)

    @app.post("/conversation", response_class=HTMLResponse)
    async def conversation(request: Request) -> Response:
        session, form = await posted(request, "messages")
        values = conversation_form(form)
        subject_ref = values["subject_ref"] or ""
        authorize(session.operator, "messages")
        opened = session.reasons.get(subject_ref)
        if opened is None:
            return reason_page(request, session, values, error=None)
        return await show_conversation(request, session, subject_ref, opened, values)

    @app.post("/conversation/reason", response_class=HTMLResponse)
    async def conversation_reason(request: Request) -> Response:
        session, form = await posted(request, "messages")
        values = conversation_form(form)
        subject_ref = values["subject_ref"] or ""
        try:
            reason = require_reason(field(form, "reason"))
        except ReasonRequired:
            error = translator(session.locale)("A reason of at least 3 characters is required.")
            return reason_page(request, session, values, error=error, status=400)
        opened = OpenedConversation(reason, field(form, "case_ref"), (subject_ref,))
        await sessions().remember_reason(session, subject_ref, opened)
        return await show_conversation(request, session, subject_ref, opened, values)

    @app.get("/media/{event_id}")
    async def media(request: Request, event_id: str) -> Response:
        session = await current(request)
        # Only a file of a conversation opened in this session, audited with the reason given for that one.
        for opened in session.reasons.values():
            try:
                found = await actions().media_file(
                    session.operator, event_id=event_id, subject_refs=opened.subject_refs, reason=opened.audit_reason()
                )
            except NotFound:
                continue
            inline = found.mime_type.startswith(MEDIA_INLINE)
            disposition = "inline" if inline else "attachment"
            # Streamed as it is decrypted, one authenticated chunk at a time: a 100 MB document costs a chunk of
            # memory, not the file. The length is announced, so a download cut by a chunk found corrupt midway
            # is seen as incomplete by the browser.
            return StreamingResponse(
                media_chunks(found),
                media_type=found.mime_type if inline else "application/octet-stream",
                headers={
                    "content-length": str(found.size),
                    "content-disposition": f'{disposition}; filename="{found.filename}"',
                    "content-security-policy": "default-src 'none'; sandbox",
                },
            )
        raise NotFound("no such media file")

    # ------------------------------------------------------------------ DPO pages
    async def holds_page(
        request: Request, session: Session, *, notice: str | None = None, status: int = 200
    ) -> Response:
        holds = await actions().holds(session.operator, include_released=True)
        return render(
            request,
            "holds.html",
            session,
            active=[h for h in holds if h.released_at is None],
            released=[h for h in holds if h.released_at is not None],
            scopes=HOLD_SCOPES,
            notice=notice,
        )

    @app.get("/dpo/holds", response_class=HTMLResponse)
    async def holds(request: Request) -> Response:
        session = await current(request)
        return await holds_page(request, session)

    @app.post("/dpo/holds", response_class=HTMLResponse)
    async def hold_create(request: Request) -> Response:
        session, form = await posted(request, "hold.create")
        scope = field(form, "scope")
        if scope not in HOLD_SCOPES:
            raise BadForm(f"unknown scope {scope!r}")
        hold = await actions().create_hold(
            session.operator,
            scope=scope,
            case_ref=field(form, "case_ref") or "",
            waba_id=field(form, "waba_id"),
            phone_number_id=field(form, "phone_number_id"),
            contact=field(form, "contact"),
            group_id=field(form, "group_id"),
        )
        return await holds_page(
            request, session, notice=translator(session.locale)("Hold placed: {case}.", case=hold.case_ref)
        )

    @app.post("/dpo/holds/release", response_class=HTMLResponse)
    async def hold_release(request: Request) -> Response:
        session, form = await posted(request, "hold.release")
        release = await actions().release_hold(session.operator, field(form, "hold_id") or "")
        t = translator(session.locale)
        notice = t("Hold released: {case}.", case=release.hold.case_ref)
        if release.erasures:
            listed = ", ".join(f"{e.request_ref} → {t(e.status)}" for e in release.erasures)
            notice += " " + t("Erasure requests after the release: {list}.", list=listed)
        return await holds_page(request, session, notice=notice)

    async def erasures_page(request: Request, session: Session, *, decided: tuple[str, str] | None = None) -> Response:
        """The erasure requests, with a notice of the one just ``decided`` (its reference and status), if any."""
        requests = await actions().erasures(session.operator)
        t = translator(session.locale)
        notice = None if decided is None else t("Erasure {ref}: {status}.", ref=decided[0], status=t(decided[1]))
        return render(
            request,
            "erasures.html",
            session,
            requests=list(reversed(requests)),
            grounds=REFUSAL_GROUNDS,
            now=datetime.now(ZoneInfo(session.timezone)),
            notice=notice,
        )

    @app.get("/dpo/erasures", response_class=HTMLResponse)
    async def erasures(request: Request) -> Response:
        return await erasures_page(request, await current(request))

    @app.post("/dpo/erasures", response_class=HTMLResponse)
    async def erasure_create(request: Request) -> Response:
        session, form = await posted(request, "erase")
        outcome = await actions().erase(
            session.operator,
            contact=field(form, "contact") or "",
            phone_number_id=field(form, "phone_number_id"),
            request_ref=field(form, "request_ref") or "",
        )
        return await erasures_page(request, session, decided=(outcome.request_ref, outcome.status))

    @app.post("/dpo/erasures/refuse", response_class=HTMLResponse)
    async def erasure_refuse(request: Request) -> Response:
        session, form = await posted(request, "erasure.refuse")
        decided = await actions().refuse_erasure(
            session.operator, field(form, "request_ref") or "", ground=field(form, "ground") or ""
        )
        return await erasures_page(request, session, decided=(decided.request_ref, decided.status))

    @app.post("/dpo/erasures/extend", response_class=HTMLResponse)
    async def erasure_extend(request: Request) -> Response:
        session, form = await posted(request, "erasure.extend")
        decided = await actions().extend_erasure(
            session.operator, field(form, "request_ref") or "", reason=field(form, "reason") or ""
        )
        return await erasures_page(request, session, decided=(decided.request_ref, decided.status))

    async def audit_page(request: Request, session: Session, where: AuditFilter, values: Mapping[str, str]) -> Response:
        entries = await actions().audit_log(session.operator, limit=AUDIT_LIMIT, where=where)
        return render(
            request, "audit.html", session, entries=list(reversed(entries)), values=values, audit_details=audit_details
        )

    @app.get("/dpo/audit", response_class=HTMLResponse)
    async def audit(request: Request) -> Response:
        return await audit_page(request, await current(request), AuditFilter(), {})

    @app.post("/dpo/audit", response_class=HTMLResponse)
    async def audit_filtered(request: Request) -> Response:
        session, form = await posted(request, "audit")
        tz = ZoneInfo(session.timezone)
        values = {name: field(form, name) or "" for name in ("actor", "action", "subject_ref", "since", "until")}
        try:
            since = parse_day(field(form, "since"), tz, end=False)
            until = parse_day(field(form, "until"), tz, end=True)
        except ValueError as exc:
            raise BadForm("dates are YYYY-MM-DD") from exc
        where = AuditFilter(
            actor=field(form, "actor"),
            action=field(form, "action"),
            subject_ref=field(form, "subject_ref"),
            since=since,
            until=until,
        )
        return await audit_page(request, session, where, values)

    @app.get("/dpo/retention", response_class=HTMLResponse)
    async def retention_page(request: Request) -> Response:
        session = await current(request)
        authorize(session.operator, "retention.run")
        return render(request, "retention.html", session, report=None)

    @app.post("/dpo/retention", response_class=HTMLResponse)
    async def retention_dry_run(request: Request) -> Response:
        session, _form = await posted(request, "retention.run")
        report = await actions().run_retention(session.operator, dry_run=True)
        return render(request, "retention.html", session, report=report)

    app.state.metrics = metrics
    return app
