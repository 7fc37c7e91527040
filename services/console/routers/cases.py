"""Cases: ``GET /cases`` (the cases the viewer may see; the DPO's form to open one), ``POST /cases`` (open),
``GET /cases/{ref}`` (a case: custodians and their holds, reviewers, saved searches, tagged messages with their
notes), and its forms: ``POST /cases/{ref}/close``, ``…/custodians``, ``…/reviewers`` (the DPO's), ``…/searches``
(save one), ``…/searches/run`` (its results), ``…/searches/export`` (their export, as a job), ``…/export`` (the DPO
asks for the case's export: a four-eyes request whose state, then job and download, the case page shows), and
``POST /cases/review`` (tag or note a message from its conversation page; back to the case page).

A case's reference is the only thing of a case in a URL: a plain token (services/governance/cases.py), never a
person's identifier. Contacts, words and notes travel in POST bodies.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Final
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import FormData

from services.actions.layer import Actions, ApprovalRequest
from services.console.deps import ActionsDep, CurrentSession, PagesDep, Posted, PostedBy
from services.console.forms import BadForm, field, parse_day
from services.console.i18n import translator
from services.console.pages import Pages
from services.console.sessions import Session
from services.core.refusals import NotFound
from services.core.vocabulary import CUSTODIAN_KINDS
from services.evidence.package import BAG_FORMATS
from services.governance.cases import CASE_REF_PATTERN, CustodianSpec, Incident
from services.review.search import IndexHit

router = APIRouter()

# A list field: values separated by commas, blanks or new lines.
SEPARATORS: Final = re.compile(r"[\s,]+")


def values_of(form: FormData, name: str) -> list[str]:
    return [value for value in SEPARATORS.split(field(form, name) or "") if value]


def custodians_of(form: FormData) -> list[CustodianSpec]:
    """The custodians the open-case form names: business numbers, contacts, pseudonyms, group ids (lists)."""
    return [
        *(CustodianSpec(kind="phone_number", phone_number_id=n) for n in values_of(form, "numbers")),
        *(CustodianSpec(kind="person", contact=c) for c in values_of(form, "contacts")),
        *(CustodianSpec(kind="person", subject_ref=r) for r in values_of(form, "subject_refs")),
        *(CustodianSpec(kind="group", group_id=g) for g in values_of(form, "group_ids")),
    ]


def known_ref(case_ref: str) -> str:
    """The path's reference if it has a reference's shape; NotFound otherwise (nothing is looked up)."""
    if not CASE_REF_PATTERN.match(case_ref):
        raise NotFound("no case with this reference")
    return case_ref


async def cases_page(
    request: Request, session: Session, actions: Actions, pages: Pages, *, notice: str | None = None
) -> Response:
    found = await actions.cases(session.operator)
    return pages.render(
        request,
        "cases.html",
        session,
        open_cases=[c for c in found if c.status == "open"],
        closed_cases=[c for c in found if c.status == "closed"],
        notice=notice,
    )


async def case_page(
    request: Request,
    session: Session,
    actions: Actions,
    pages: Pages,
    case_ref: str,
    *,
    notice: str | None = None,
    results: tuple[str, list[IndexHit]] | None = None,
) -> Response:
    """The case page (audited ``case.viewed``: its notes are decrypted), with ``notice`` and a saved search's
    ``results`` (its id and hits) when one was just run."""
    case = await actions.case(session.operator, case_ref)
    is_dpo = session.operator.role == "dpo"
    return pages.render(
        request,
        "case.html",
        session,
        case=case,
        custodian_labels={c.custodian_id: c.label for c in case.custodians},
        custodian_kinds=CUSTODIAN_KINDS,
        notice=notice,
        results=results,
        exports=await actions.case_export_requests(session.operator, case.case_ref) if is_dpo else [],
        bag_formats=BAG_FORMATS,
        now=datetime.now(UTC),
    )


@router.get("/cases", response_class=HTMLResponse)
async def cases(request: Request, session: CurrentSession, actions: ActionsDep, pages: PagesDep) -> Response:
    return await cases_page(request, session, actions, pages)


@router.post("/cases", response_class=HTMLResponse)
async def case_open(
    request: Request, posted: Annotated[Posted, Depends(PostedBy("case.open"))], actions: ActionsDep, pages: PagesDep
) -> Response:
    session, form = posted.session, posted.form
    zone = ZoneInfo(session.timezone)
    try:
        since = parse_day(field(form, "since"), zone, end=False)
        until = parse_day(field(form, "until"), zone, end=True)
    except ValueError:
        raise BadForm("a date is YYYY-MM-DD") from None
    summary = await actions.open_case(
        session.operator,
        title=field(form, "title") or "",
        case_ref=field(form, "case_ref"),
        period_start=since,
        period_end=until,
        custodians=custodians_of(form),
        with_holds=field(form, "with_holds") == "on",
        incident=Incident(
            what_deleted=field(form, "what_deleted"),
            deleted_by=field(form, "deleted_by"),
            deleted_when=field(form, "deleted_when"),
            communicated=field(form, "communicated"),
        ),
        reviewers=values_of(form, "reviewers"),
    )
    notice = translator(session.locale).gettext("Case %(ref)s opened.", ref=summary.case_ref)
    return await case_page(request, session, actions, pages, summary.case_ref, notice=notice)


@router.post("/cases/review", response_class=HTMLResponse)
async def case_review(
    request: Request,
    posted: Annotated[Posted, Depends(PostedBy("case.review"))],
    actions: ActionsDep,
    pages: PagesDep,
) -> Response:
    """Tag and/or note a message (from its conversation page), then show the case."""
    session, form = posted.session, posted.form
    case_ref = known_ref(field(form, "case_ref") or "")
    event_id = field(form, "event_id") or ""
    tag, note = field(form, "tag"), field(form, "note")
    if tag is None and note is None:
        raise BadForm("give a tag or a note")
    if tag is not None:
        await actions.tag_message(session.operator, case_ref, event_id=event_id, tag=tag)
    if note is not None:
        await actions.note_message(session.operator, case_ref, event_id=event_id, text=note)
    notice = translator(session.locale).gettext("Your review of the message was added to %(ref)s.", ref=case_ref)
    return await case_page(request, session, actions, pages, case_ref, notice=notice)


@router.get("/cases/{case_ref}", response_class=HTMLResponse)
async def case(
    request: Request, case_ref: str, session: CurrentSession, actions: ActionsDep, pages: PagesDep
) -> Response:
    return await case_page(request, session, actions, pages, known_ref(case_ref))


@router.post("/cases/{case_ref}/close", response_class=HTMLResponse)
async def case_close(
    request: Request,
    case_ref: str,
    posted: Annotated[Posted, Depends(PostedBy("case.close"))],
    actions: ActionsDep,
    pages: PagesDep,
) -> Response:
    session = posted.session
    await actions.request_case_close(session.operator, known_ref(case_ref), reason=field(posted.form, "reason"))
    notice = translator(session.locale).gettext(
        "Closing requested: the case stays open until a second DPO approves it."
    )
    return await case_page(request, session, actions, pages, case_ref, notice=notice)


@router.post("/cases/{case_ref}/custodians", response_class=HTMLResponse)
async def case_custodian(
    request: Request,
    case_ref: str,
    posted: Annotated[Posted, Depends(PostedBy("case.custodian"))],
    actions: ActionsDep,
    pages: PagesDep,
) -> Response:
    session, form = posted.session, posted.form
    specs = custodians_of(form)
    if len(specs) != 1:
        raise BadForm("name one custodian")
    added = await actions.add_custodian(session.operator, known_ref(case_ref), specs[0])
    notice = translator(session.locale).gettext("Custodian added: %(who)s.", who=added.label)
    return await case_page(request, session, actions, pages, case_ref, notice=notice)


@router.post("/cases/{case_ref}/reviewers", response_class=HTMLResponse)
async def case_reviewer(
    request: Request,
    case_ref: str,
    posted: Annotated[Posted, Depends(PostedBy("case.assign"))],
    actions: ActionsDep,
    pages: PagesDep,
) -> Response:
    session = posted.session
    reviewer = field(posted.form, "reviewer") or ""
    await actions.assign_reviewer(session.operator, known_ref(case_ref), reviewer)
    notice = translator(session.locale).gettext("%(name)s reviews this case.", name=reviewer)
    return await case_page(request, session, actions, pages, case_ref, notice=notice)


@router.post("/cases/{case_ref}/searches", response_class=HTMLResponse)
async def case_search_save(
    request: Request,
    case_ref: str,
    posted: Annotated[Posted, Depends(PostedBy("case.review"))],
    actions: ActionsDep,
    pages: PagesDep,
) -> Response:
    session, form = posted.session, posted.form
    saved = await actions.save_search(
        session.operator,
        known_ref(case_ref),
        keywords=field(form, "keywords") or "",
        custodian_id=field(form, "custodian_id"),
    )
    hits = await actions.run_saved_search(session.operator, case_ref, saved.search_id)
    return await case_page(request, session, actions, pages, case_ref, results=(saved.search_id, hits))


@router.post("/cases/{case_ref}/searches/run", response_class=HTMLResponse)
async def case_search_run(
    request: Request,
    case_ref: str,
    posted: Annotated[Posted, Depends(PostedBy("case.review"))],
    actions: ActionsDep,
    pages: PagesDep,
) -> Response:
    session = posted.session
    search_id = field(posted.form, "search_id") or ""
    hits = await actions.run_saved_search(session.operator, known_ref(case_ref), search_id)
    return await case_page(request, session, actions, pages, case_ref, results=(search_id, hits))


@router.post("/cases/{case_ref}/export", response_class=HTMLResponse)
async def case_export(
    request: Request,
    case_ref: str,
    posted: Annotated[Posted, Depends(PostedBy("export"))],
    actions: ActionsDep,
    pages: PagesDep,
) -> Response:
    """Request the case's export (reason, formats): a ``case.export`` request a second DPO approves (here, on
    the approvals page, or with ``wa-archive approvals approve``); once approved, the export worker writes and
    signs it and the case page links to its download."""
    session, form = posted.session, posted.form
    formats = [name for name in BAG_FORMATS if field(form, f"format_{name}")]
    if not formats:
        raise BadForm("choose at least one format")
    asked = await actions.request_case_export(
        session.operator,
        known_ref(case_ref),
        None,
        reason=field(form, "reason"),
        formats=formats,
        language="fr" if session.locale.startswith("fr") else "en",
        time_zone=session.timezone,
    )
    notice = translator(session.locale).gettext(
        "Export requested (request %(id)s, its size below): nothing is exported until a second DPO approves it.",
        id=asked.request_id,
    )
    return await case_page(request, session, actions, pages, case_ref, notice=notice)


@router.post("/cases/{case_ref}/searches/export")
async def case_search_export(
    case_ref: str, posted: Annotated[Posted, Depends(PostedBy("export.search"))], actions: ActionsDep
) -> Response:
    """Export a saved search's results (an assigned reviewer, or the DPO): run again as the case page ran it, its
    hits frozen into an export job (or a four-eyes request above the threshold)."""
    session, form = posted.session, posted.form
    queued = await actions.queue_search_export(
        session.operator,
        saved_search=(known_ref(case_ref), field(form, "search_id") or ""),
        reason=field(form, "reason"),
        formats=[field(form, "export_format") or "all"],
        language="fr" if session.locale.startswith("fr") else "en",
    )
    if isinstance(queued, ApprovalRequest):  # above the four-eyes threshold: queued once a DPO approves it
        return RedirectResponse(f"/approvals?requested={queued.request_id}", status_code=303)
    return RedirectResponse(f"/exports/{queued.job_id}", status_code=303)
