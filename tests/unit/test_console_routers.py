"""The console's routers stand on their own: each is mounted on a bare FastAPI app, its dependencies
(services/console/deps.py) replaced through ``app.dependency_overrides`` — no database, no archive, no lifespan.

What they show: the search turns a form into the query the action layer gets (days in the viewer's time zone,
choices outside the console's ignored) and refuses an unreadable date before asking anything; a POST without the
session's CSRF token or from another site does nothing; a POST to a DPO page is refused for its role before its form
is read; the sign-in page's form token is the one its cookie holds."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlsplit
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from starlette.datastructures import FormData

from services.actions.layer import Operator
from services.console.auth import NamedCredentials
from services.console.deps import (
    StepUpNeeded,
    authenticator_of,
    current_session,
    metrics_of,
    pages_of,
    provider_of,
    settings_of,
)
from services.console.deps import actions_of as actions_dependency
from services.console.forms import FormTooLarge, RefusedForm
from services.console.metrics import ConsoleMetrics
from services.console.oidc import ProviderSignIn
from services.console.pages import SIGNIN_COOKIE, Pages, console_templates
from services.console.routers import approvals, cases, holds, search, signin
from services.console.routers.search import search_filter
from services.console.sessions import ProviderLink, ProviderSecrets, Session
from services.console.settings import ConsoleSettings
from services.core.refusals import Forbidden, NotFound
from services.core.settings import ConsoleOidcSettings
from services.governance.cases import CustodianSpec
from services.governance.scope import Grant, ReadingScope
from services.retention.settings import RetentionSettings
from services.review.search import IndexHit, SearchFilter

pytestmark = pytest.mark.unit

CSRF = "csrf-token-of-the-session"
PARIS = ZoneInfo("Europe/Paris")


def session_of(role: str) -> Session:
    return Session(
        session_hash=b"hash",
        operator=Operator("alice", "dpo" if role == "dpo" else "reader"),
        csrf_token=CSRF,
        locale="en",
        timezone="Europe/Paris",
    )


class RecordingActions:
    """The calls the search router makes: the search, recorded (answers ``hits``), and the reader's scope (the
    case ``CASE-1``)."""

    def __init__(self, hits: list[IndexHit]) -> None:
        self.hits = hits
        self.queries: list[SearchFilter] = []

    async def search(self, operator: Operator, query: SearchFilter) -> list[IndexHit]:
        self.queries.append(query)
        return self.hits

    async def reading_scope(self, operator: Operator) -> ReadingScope:
        return ReadingScope((Grant(source="CASE-1"),))


def hit(event_id: str, subject_ref: str) -> IndexHit:
    moment = datetime(2026, 3, 5, 13, 7, tzinfo=UTC)
    return IndexHit(
        event_id=event_id,
        kind="message",
        type="text",
        phone_number_id="pn-1",
        subject_ref=subject_ref,
        event_time=moment,
        received_at=moment,
        retention_class="standard",
        expires_at=None,
        deleted=False,
        edited=False,
    )


def bare_app(*routers: Any, session: Session | None, actions: object | None = None) -> tuple[FastAPI, ConsoleMetrics]:
    """``routers`` on an app of their own, every dependency they take from ``app.state`` overridden."""
    app = FastAPI()
    for router in routers:
        app.include_router(router)
    metrics = ConsoleMetrics(CollectorRegistry())
    settings = ConsoleSettings(secure_cookies=False, max_form_field_bytes=256)
    named = NamedCredentials(RetentionSettings())
    overrides: dict[Callable[..., Any], Callable[..., Any]] = {
        settings_of: lambda: settings,
        pages_of: lambda: Pages(console_templates(), settings.default_timezone),
        metrics_of: lambda: metrics,
        # Signed in with a named token (the local demo's way): no provider, so no step-up.
        provider_of: lambda: None,
        authenticator_of: lambda: named,
    }
    if session is not None:
        overrides[current_session] = lambda: session
    if actions is not None:
        overrides[actions_dependency] = lambda: actions
    app.dependency_overrides.update(overrides)
    return app, metrics


@pytest.fixture
async def client_factory() -> AsyncIterator[Callable[[FastAPI], httpx.AsyncClient]]:
    clients: list[httpx.AsyncClient] = []

    def client(app: FastAPI) -> httpx.AsyncClient:
        made = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test")
        clients.append(made)
        return made

    yield client
    for made in clients:
        await made.aclose()


async def test_search_asks_the_actions_for_the_form_query_and_groups_hits_by_conversation(
    client_factory: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    actions = RecordingActions([hit("e1", "ref-a"), hit("e2", "ref-b"), hit("e3", "ref-a")])
    app, _ = bare_app(search.router, session=session_of("reader"), actions=actions)
    form = {"csrf": CSRF, "contact": " +33 6 12 ", "since": "2026-03-01", "kind": "bogus", "type": "image"}
    answer = await client_factory(app).post("/search", data=form)
    assert answer.status_code == 200
    [query] = actions.queries
    assert (query.contact, query.kind, query.type, query.limit) == ("+33 6 12", None, "image", search.SEARCH_LIMIT)
    assert query.since == datetime(2026, 3, 1, tzinfo=PARIS)
    # Two conversations, ref-a first with its two hits.
    assert answer.text.index('data-event="e1"') < answer.text.index('data-event="e3"') < answer.text.index("e2")


async def test_search_refuses_an_unreadable_date_without_asking_the_actions(
    client_factory: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    actions = RecordingActions([])
    app, _ = bare_app(search.router, session=session_of("reader"), actions=actions)
    answer = await client_factory(app).post("/search", data={"csrf": CSRF, "until": "05/03/2026"})
    assert answer.status_code == 400
    assert "YYYY-MM-DD" in answer.text
    assert actions.queries == []


@pytest.mark.parametrize(
    ("form", "headers"),
    [
        pytest.param({"keywords": "x"}, {}, id="no token"),
        pytest.param({"csrf": "another", "keywords": "x"}, {}, id="wrong token"),
        pytest.param({"csrf": CSRF}, {"origin": "https://elsewhere.example"}, id="another site"),
        pytest.param({"csrf": CSRF}, {"origin": "null"}, id="opaque origin"),
    ],
)
async def test_a_search_form_not_from_the_session_does_nothing(
    client_factory: Callable[[FastAPI], httpx.AsyncClient], form: dict[str, str], headers: dict[str, str]
) -> None:
    actions = RecordingActions([])
    app, metrics = bare_app(search.router, session=session_of("reader"), actions=actions)
    with pytest.raises(RefusedForm):
        await client_factory(app).post("/search", data=form, headers=headers)
    assert actions.queries == []
    assert metrics.refused_forms._value.get() == 1


@pytest.mark.parametrize(
    ("role", "refusal"),
    [
        pytest.param("reader", Forbidden, id="reader: refused for the role, the form unread"),
        pytest.param("dpo", FormTooLarge, id="dpo: the form is read, and is too large"),
    ],
)
async def test_a_dpo_form_is_refused_for_its_role_before_it_is_read(
    client_factory: Callable[[FastAPI], httpx.AsyncClient], role: str, refusal: type[Exception]
) -> None:
    app, _ = bare_app(holds.router, session=session_of(role))
    # A field past the form's limit (256 bytes here): read, it is FormTooLarge.
    with pytest.raises(refusal):
        await client_factory(app).post("/dpo/holds", data={"csrf": CSRF, "case_ref": "x" * 10_000})


async def test_the_signin_form_token_is_the_one_its_cookie_holds(
    client_factory: Callable[[FastAPI], httpx.AsyncClient],
) -> None:
    app, _ = bare_app(signin.router, session=None)
    answer = await client_factory(app).get("/signin", params={"ended": "1"})
    assert answer.status_code == 200
    token = re.search(r'name="signin_token" value="([^"]+)"', answer.text)
    assert token
    assert answer.cookies[SIGNIN_COOKIE] == token.group(1)
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "max-age=3600" in cookie
    assert "Your session has ended" in answer.text


def form_of(**fields: str) -> FormData:
    return FormData(list(fields.items()))


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, SearchFilter(limit=search.SEARCH_LIMIT), id="empty form: everything, up to the limit"),
        pytest.param(
            {"until": "2026-07-14"},
            SearchFilter(until=datetime(2026, 7, 14, 23, 59, 59, 999999, PARIS), limit=search.SEARCH_LIMIT),
            id="until is the end of that day in the viewer's zone",
        ),
        pytest.param(
            {"kind": "echo", "type": "sticker", "deleted_only": "1", "keywords": "  "},
            SearchFilter(kind="echo", type="sticker", deleted_only=True, limit=search.SEARCH_LIMIT),
            id="known choices kept, blank keywords dropped",
        ),
        pytest.param(
            {"kind": "secret", "type": "<script>"},
            SearchFilter(limit=search.SEARCH_LIMIT),
            id="unknown choices are no filter",
        ),
    ],
)
def test_search_filter_of_a_form(fields: dict[str, str], expected: SearchFilter) -> None:
    assert search_filter(form_of(**fields), PARIS) == expected


@pytest.mark.parametrize("since", ["2026-3-1", "yesterday", "2026-02-30"])
def test_search_filter_refuses_a_date_that_is_not_a_day(since: str) -> None:
    with pytest.raises(ValueError, match=r"isoformat|out of range"):
        search_filter(form_of(since=since), PARIS)


@pytest.mark.parametrize(
    ("back", "expected"),
    [
        (None, "/search"),
        ("/dpo/holds", "/dpo/holds"),
        ("//evil.example/x", "/search"),
        ("https://evil.example/", "/search"),
        ("search", "/search"),
        ("/\\evil.example/x", "/search"),
        ("/\t/evil.example/x", "/search"),
        ("/\n/evil.example", "/search"),
        ("/search?q=%2F%2Fx", "/search?q=%2F%2Fx"),
    ],
)
def test_the_language_form_returns_to_a_console_page_only(back: str | None, expected: str) -> None:
    assert signin.safe_back(back) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("/\\\t\n\r :.@?#%aZ")), max_size=12))
def test_a_return_path_never_leaves_the_console(back: str) -> None:
    # What a browser does with a Location: strip tabs and newlines, read backslashes as slashes; then it must be a
    # path of the console's own origin.
    kept = signin.safe_back(back)
    seen = kept.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    assert urlsplit(urljoin("https://console.example/", seen)).netloc == "console.example"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({}, [], id="no custodian"),
        pytest.param(
            {"numbers": "111, 222\n", "contacts": " 33612 ", "group_ids": "g-1"},
            [
                CustodianSpec(kind="phone_number", phone_number_id="111"),
                CustodianSpec(kind="phone_number", phone_number_id="222"),
                CustodianSpec(kind="person", contact="33612"),
                CustodianSpec(kind="group", group_id="g-1"),
            ],
            id="lists separated by commas, blanks, new lines",
        ),
        pytest.param(
            {"subject_refs": "a" * 64}, [CustodianSpec(kind="person", subject_ref="a" * 64)], id="a pseudonym"
        ),
    ],
)
def test_the_custodians_of_a_case_form(fields: dict[str, str], expected: list[CustodianSpec]) -> None:
    assert cases.custodians_of(form_of(**fields)) == expected


@pytest.mark.parametrize("ref", ["a b", "../x", "-x", "x" * 49])
def test_a_path_that_is_no_case_reference_is_not_found_without_a_lookup(ref: str) -> None:
    with pytest.raises(NotFound):
        cases.known_ref(ref)


@pytest.mark.parametrize(
    ("path", "action"),
    [
        pytest.param("/cases", "open", id="open a case"),
        pytest.param("/cases/CASE-2026-0001/close", "close", id="close a case"),
        pytest.param("/cases/CASE-2026-0001/custodians", "add a custodian", id="add a custodian"),
        pytest.param("/cases/CASE-2026-0001/reviewers", "assign", id="assign a reviewer"),
    ],
)
async def test_a_reader_is_refused_the_dpos_case_forms_before_they_are_read(
    client_factory: Callable[[FastAPI], httpx.AsyncClient], path: str, action: str
) -> None:
    app, _ = bare_app(cases.router, session=session_of("reader"))
    with pytest.raises(Forbidden):
        await client_factory(app).post(path, data={"csrf": CSRF, "title": "x" * 10_000})


def provider_session(acr: str | None) -> Session:
    link = ProviderLink(
        sid_digest=None,
        sub_digest=bytes(32),
        acr=acr,
        roles_read_at=datetime.now(UTC),
        secrets=ProviderSecrets(refresh_token=None, id_token=None, name="Alice", stepped_up_at=time.time()),
    )
    return replace(session_of("dpo"), provider=link)


@pytest.mark.parametrize(
    ("acr", "refusal"),
    [
        pytest.param("pwd", StepUpNeeded, id="a password only: sent to step up, the form unread"),
        pytest.param("mfa", FormTooLarge, id="stepped up: the form is read, and is too large"),
    ],
)
@pytest.mark.parametrize(
    ("router", "path", "page"),
    [
        pytest.param(holds.router, "/dpo/holds/release", "/dpo/holds", id="a hold release"),
        # Under four eyes the approver is who carries the erasure, release or export out: they step up too.
        pytest.param(approvals.router, "/approvals/1/approve", "/approvals", id="an approval"),
    ],
)
async def test_what_cannot_be_undone_needs_the_step_up_before_its_form_is_read(
    client_factory: Callable[[FastAPI], httpx.AsyncClient],
    acr: str,
    refusal: type[Exception],
    router: APIRouter,
    path: str,
    page: str,
) -> None:
    app, _ = bare_app(router, session=provider_session(acr))
    settings = ConsoleOidcSettings(issuer="https://id.example.org/realms/r", client_id="console", step_up_acr="mfa")
    provider = ProviderSignIn(settings)
    app.dependency_overrides[provider_of] = lambda: provider
    try:
        with pytest.raises(refusal) as raised:
            await client_factory(app).post(
                path,
                data={"csrf": CSRF, "hold_id": "x" * 10_000, "reason": "x" * 10_000},
                headers={"referer": f"http://console.test{page}"},
            )
    finally:
        await provider.close()
    if isinstance(raised.value, StepUpNeeded):
        assert raised.value.back == page  # back to the page the button was clicked on
