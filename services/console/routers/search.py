"""Searching the archive's metadata: ``GET /`` (to the search), ``GET /search``, ``POST /search``.

The terms travel in the POST body, never in the URL; the hits are grouped by conversation (pseudonym), at most
:data:`SEARCH_LIMIT` of them. A conversation the session already opened (its reason given) is labelled with who it
is with, read with that reason and audited; any other stays a pseudonym.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Final
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.datastructures import FormData

from services.actions.layer import Actions, authorize
from services.console.choices import DIRECTION_WORDS, KINDS, TYPES
from services.console.deps import ActionsDep, CurrentSession, PagesDep, Posted, PostedBy
from services.console.forms import field, parse_day
from services.console.i18n import translator
from services.console.sessions import Session
from services.core.vocabulary import direction_of_kind
from services.review.correspondent import Correspondent
from services.review.search import IndexHit, SearchFilter

router = APIRouter()

SEARCH_LIMIT: Final = 500
FIELDS: Final = ("keywords", "contact", "phone_number_id", "since", "until", "kind", "type")


def direction_of(kind: str) -> str:
    """A hit's direction as the results table words it (the kind itself when the kind does not say)."""
    direction = direction_of_kind(kind)
    return kind if direction is None else DIRECTION_WORDS[direction]


def group_hits(hits: list[IndexHit]) -> list[tuple[str, list[IndexHit]]]:
    """Search hits by conversation (pseudonym), in the order each conversation first appears."""
    groups: dict[str, list[IndexHit]] = {}
    for hit in hits:
        groups.setdefault(hit.subject_ref or "", []).append(hit)
    return list(groups.items())


def form_values(form: FormData) -> dict[str, str]:
    """The search form as posted, to show it again with the results."""
    values = {name: field(form, name) or "" for name in FIELDS}
    values["deleted_only"] = "1" if field(form, "deleted_only") else ""
    values["edited_only"] = "1" if field(form, "edited_only") else ""
    return values


def search_filter(form: FormData, tz: ZoneInfo) -> SearchFilter:
    """The query the form asks for, its days in the viewer's time zone ``tz``; ValueError for a date that is not
    YYYY-MM-DD. A kind or a type outside the console's choices is no filter."""
    since = parse_day(field(form, "since"), tz, end=False)
    until = parse_day(field(form, "until"), tz, end=True)
    kind = field(form, "kind")
    kind_type = field(form, "type")
    return SearchFilter(
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


async def opened_names(actions: Actions, session: Session, refs: Sequence[str]) -> dict[str, Correspondent]:
    """Who each conversation of ``refs`` is with, for those this session already opened (the reason given): read
    with that reason, audited as a retrieval (:meth:`Actions.correspondent`). The others stay pseudonyms: a search
    is index metadata, and naming a person is a read of their records."""
    names: dict[str, Correspondent] = {}
    for ref in refs:
        opened = session.opened_for(ref) if ref else None
        if opened is not None:
            found = await actions.correspondent(session.operator, subject_ref=ref, reason=opened.audit_reason())
            if found.label:
                names[ref] = found
    return names


async def scope_of(actions: Actions, session: Session) -> list[str] | None:
    """The cases the viewer's reading is limited to, for the page to say (None: they read everything)."""
    scope = await actions.reading_scope(session.operator)
    return None if scope.everything else scope.sources


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/search", status_code=303)


@router.get("/search", response_class=HTMLResponse)
async def search_page(request: Request, session: CurrentSession, actions: ActionsDep, pages: PagesDep) -> Response:
    authorize(session.operator, "search")
    return pages.render(
        request,
        "search.html",
        session,
        query={},
        groups=None,
        kinds=KINDS,
        types=TYPES,
        error=None,
        scope=await scope_of(actions, session),
    )


@router.post("/search", response_class=HTMLResponse)
async def search(
    request: Request,
    posted: Annotated[Posted, Depends(PostedBy("search"))],
    actions: ActionsDep,
    pages: PagesDep,
) -> Response:
    session, form = posted.session, posted.form
    values = form_values(form)
    try:
        query = search_filter(form, ZoneInfo(session.timezone))
    except ValueError:
        error = translator(session.locale).gettext("Give the dates as YYYY-MM-DD.")
        return pages.render(
            request,
            "search.html",
            session,
            status=400,
            query=values,
            groups=None,
            kinds=KINDS,
            types=TYPES,
            error=error,
            scope=await scope_of(actions, session),
        )
    hits = await actions.search(session.operator, query)
    groups = group_hits(hits)
    return pages.render(
        request,
        "search.html",
        session,
        query=values,
        groups=groups,
        names=await opened_names(actions, session, [ref for ref, _hits in groups]),
        hit_count=len(hits),
        truncated=len(hits) >= SEARCH_LIMIT,
        limit=SEARCH_LIMIT,
        direction_of=direction_of,
        kinds=KINDS,
        types=TYPES,
        error=None,
        scope=await scope_of(actions, session),
    )
