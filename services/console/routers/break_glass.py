"""Asking for break-glass access from the console: ``POST /break-glass`` (from the page that refused a conversation
outside the reader's cases: services/console/templates/outside.html).

The request (services/actions/break_glass.py) waits for a data protection officer other than the reader; once
approved, the conversation opens as any other, each read flagged in the audit log. The pseudonym travels in the
form, never the URL.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from services.console.deps import ActionsDep, PagesDep, Posted, PostedBy
from services.console.forms import field

router = APIRouter()


@router.post("/break-glass", response_class=HTMLResponse)
async def ask_for_access(
    request: Request,
    posted: Annotated[Posted, Depends(PostedBy("messages"))],
    actions: ActionsDep,
    pages: PagesDep,
) -> Response:
    session, form = posted.session, posted.form
    asked = await actions.request_break_glass(
        session.operator, subject_ref=field(form, "subject_ref") or "", reason=field(form, "reason")
    )
    return pages.render(request, "outside.html", session, status=202, subject_ref=None, break_glass=False, asked=asked)
