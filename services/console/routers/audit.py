"""The data protection officer's audit log: ``GET /dpo/audit`` (the latest entries), ``POST /dpo/audit`` (filtered
by actor, action, pseudonym and days). Filters travel in the POST body, never in the URL."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Final
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse
from starlette.datastructures import FormData

from services.actions.layer import Actions
from services.console.audit_view import audit_details
from services.console.deps import ActionsDep, CurrentSession, PagesDep, Posted, PostedBy
from services.console.forms import BadForm, field, parse_day
from services.console.pages import Pages
from services.console.sessions import Session
from services.core.audit import AuditFilter

router = APIRouter()

AUDIT_LIMIT: Final = 200
FIELDS: Final = ("actor", "action", "subject_ref", "since", "until")


def audit_filter(form: FormData, tz: ZoneInfo) -> AuditFilter:
    """The entries the form asks for, its days in the viewer's time zone ``tz``; BadForm (400) for a date that is
    not YYYY-MM-DD."""
    try:
        since = parse_day(field(form, "since"), tz, end=False)
        until = parse_day(field(form, "until"), tz, end=True)
    except ValueError as exc:
        raise BadForm("dates are YYYY-MM-DD") from exc
    return AuditFilter(
        actor=field(form, "actor"),
        action=field(form, "action"),
        subject_ref=field(form, "subject_ref"),
        since=since,
        until=until,
    )


async def audit_page(
    request: Request, session: Session, actions: Actions, pages: Pages, where: AuditFilter, values: Mapping[str, str]
) -> Response:
    """The latest :data:`AUDIT_LIMIT` entries that ``where`` selects, oldest first, the form showing ``values``."""
    entries = await actions.audit_log(session.operator, limit=AUDIT_LIMIT, where=where)
    return pages.render(
        request, "audit.html", session, entries=list(reversed(entries)), values=values, audit_details=audit_details
    )


@router.get("/dpo/audit", response_class=HTMLResponse)
async def audit(request: Request, session: CurrentSession, actions: ActionsDep, pages: PagesDep) -> Response:
    return await audit_page(request, session, actions, pages, AuditFilter(), {})


@router.post("/dpo/audit", response_class=HTMLResponse)
async def audit_filtered(
    request: Request, posted: Annotated[Posted, Depends(PostedBy("audit"))], actions: ActionsDep, pages: PagesDep
) -> Response:
    session, form = posted.session, posted.form
    values = {name: field(form, name) or "" for name in FIELDS}
    where = audit_filter(form, ZoneInfo(session.timezone))
    return await audit_page(request, session, actions, pages, where, values)
