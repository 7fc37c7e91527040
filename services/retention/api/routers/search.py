"""Search the index's metadata (nothing is decrypted, so no reason; audited with the filters)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from services.core.vocabulary import EventKind
from services.retention.api.dependencies import Caller, ReadyActions
from services.retention.api.gate import requires
from services.retention.api.requests import SearchRequest
from services.retention.api.responses import GATED, GATED_WITH_BODY, IndexHitView, errors
from services.review.search import SearchFilter

search_router = APIRouter(prefix="/v1/search", tags=["search"])


@search_router.get(
    "",
    summary="Search the index metadata (nothing is decrypted)",
    description="Without a person or keywords, which would be in the URL: POST /v1/search takes both.",
    responses={**GATED, **errors(400)},
    **requires("search"),
)
async def search(
    operator: Caller,
    actions: ReadyActions,
    request: Request,
    phone_number_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    kind: EventKind | None = None,
    type: str | None = None,
    deleted_only: bool = False,
    edited_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[IndexHitView]:
    if {"contact", "keywords"} & request.query_params.keys():
        raise HTTPException(400, "a person or keywords go in the body: POST /v1/search")
    query = SearchFilter(
        phone_number_id=phone_number_id,
        since=since,
        until=until,
        kind=kind,
        type=type,
        deleted_only=deleted_only,
        edited_only=edited_only,
        limit=limit,
    )
    return [IndexHitView.model_validate(hit.to_json()) for hit in await actions.search(operator, query)]


@search_router.post(
    "",
    summary="Search the index metadata, keywords included, with the filter in the body",
    responses=GATED_WITH_BODY,
    **requires("search"),
)
async def search_by_body(operator: Caller, actions: ReadyActions, body: SearchRequest) -> list[IndexHitView]:
    # In the body, not the URL: message words and a person's number stay out of access logs.
    hits = await actions.search(operator, SearchFilter(**body.model_dump()))
    return [IndexHitView.model_validate(hit.to_json()) for hit in hits]
