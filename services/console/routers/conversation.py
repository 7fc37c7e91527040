"""Reading a conversation as a phone shows it, after giving a reason: ``POST /conversation`` (the timeline, or the
reason form the first time in a session), ``POST /conversation/reason``.

The reason (and an optional case reference) is remembered in the session for that conversation and written with
every read of it to the audit log; a conversation whose person has linked identifiers covers all their pseudonyms.
Only then does the page name the person (profile name, number, username) and the business number, from the records
it decrypted (services/review/correspondent.py); the reason form before it shows neither name nor pseudonym.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse
from starlette.datastructures import FormData

from services.actions.layer import Actions, authorize
from services.console.deps import ActionsDep, PagesDep, Posted, PostedBy, SessionsDep, SettingsDep, console_of
from services.console.errors import count_refusal
from services.console.forms import field
from services.console.i18n import translator
from services.console.pages import Pages
from services.console.sessions import OpenedConversation, Session, SessionStore
from services.console.timeline import Page, bubbles
from services.core.audit import require_reason
from services.core.refusals import ReasonRequired
from services.governance.scope import OutsideScope

router = APIRouter()

FIELDS: Final = ("subject_ref", "event_id", "keywords", "page")

ConversationForm = Mapping[str, str | None]


def conversation_form(form: FormData) -> dict[str, str | None]:
    """What a conversation page is asked for: the pseudonym, and the message to open at (``event_id``), the words
    to find (``keywords``) or the page number (``page``, which wins over both)."""
    return {name: field(form, name) for name in FIELDS}


async def show_conversation(
    request: Request,
    session: Session,
    subject_ref: str,
    opened: OpenedConversation,
    values: ConversationForm,
    *,
    actions: Actions,
    sessions: SessionStore,
    pages: Pages,
    page_size: int,
) -> Response:
    """The asked page of the conversation, read (and audited) with the reason ``opened`` holds; the session learns
    the pseudonyms the conversation covers when they changed."""
    keywords = values.get("keywords")
    page_number = values.get("page")
    try:
        found = await actions.conversation_page(
            session.operator,
            subject_ref=subject_ref,
            reason=opened.audit_reason(),
            page_size=page_size,
            page=int(page_number) if page_number and page_number.isdigit() else None,
            anchor=None if page_number else values.get("event_id"),
            keywords=None if page_number else keywords,
        )
    except OutsideScope:
        # Refused before anything was read: the page explains, and offers to ask for break-glass access.
        what = "a conversation outside the reader's cases"
        count_refusal(console_of(request).metrics, 403, "scope", what, session.operator.name)
        return pages.render(request, "outside.html", session, status=403, subject_ref=subject_ref, break_glass=True)
    if tuple(found.subject_refs) != opened.subject_refs:
        opened = OpenedConversation(opened.reason, opened.case_ref, tuple(found.subject_refs))
        await sessions.remember_reason(session, subject_ref, opened)
    page = Page(
        bubbles=bubbles(found.messages, frozenset(found.matched), found.quoted),
        number=found.number,
        count=found.count,
        first=found.first,
        total=found.total,
        anchor=found.anchor,
    )
    return pages.render(
        request,
        "conversation.html",
        session,
        subject_ref=subject_ref,
        opened=opened,
        who=found.correspondent,
        page=page,
        shredded=found.shredded_records,
        keywords=keywords or "",
        matched_count=len(found.matched),
        # The open cases the viewer reviews: each message can be tagged or noted for one of them.
        review_cases=await actions.cases(session.operator, status="open"),
    )


@router.post("/conversation", response_class=HTMLResponse)
async def conversation(
    request: Request,
    posted: Annotated[Posted, Depends(PostedBy("messages"))],
    actions: ActionsDep,
    sessions: SessionsDep,
    pages: PagesDep,
    settings: SettingsDep,
) -> Response:
    session = posted.session
    values = conversation_form(posted.form)
    subject_ref = values["subject_ref"] or ""
    authorize(session.operator, "messages")
    opened = session.reasons.get(subject_ref)
    if opened is None:
        return pages.render(request, "reason.html", session, values=values, error=None)
    return await show_conversation(
        request,
        session,
        subject_ref,
        opened,
        values,
        actions=actions,
        sessions=sessions,
        pages=pages,
        page_size=settings.page_size,
    )


@router.post("/conversation/reason", response_class=HTMLResponse)
async def conversation_reason(
    request: Request,
    posted: Annotated[Posted, Depends(PostedBy("messages"))],
    actions: ActionsDep,
    sessions: SessionsDep,
    pages: PagesDep,
    settings: SettingsDep,
) -> Response:
    session, form = posted.session, posted.form
    values = conversation_form(form)
    subject_ref = values["subject_ref"] or ""
    try:
        reason = require_reason(field(form, "reason"))
    except ReasonRequired:
        error = translator(session.locale).gettext("A reason of at least 3 characters is required.")
        return pages.render(request, "reason.html", session, status=400, values=values, error=error)
    opened = OpenedConversation(reason, field(form, "case_ref"), (subject_ref,))
    await sessions.remember_reason(session, subject_ref, opened)
    return await show_conversation(
        request,
        session,
        subject_ref,
        opened,
        values,
        actions=actions,
        sessions=sessions,
        pages=pages,
        page_size=settings.page_size,
    )
