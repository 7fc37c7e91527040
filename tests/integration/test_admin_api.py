"""The admin API against the real stack: its answers are the domain's JSON as the action layer returns it, byte for
byte in the order and encoding FastAPI wrote a returned dict before the routes had response models."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import TypeAdapter

from devtools import pipeline
from devtools.serving import serve_asgi
from services.actions.access import ArchiveAccess, open_access
from services.actions.layer import Actions, Operator
from services.governance.metrics import RetentionMetrics
from services.retention.api import create_admin_app
from tests.helpers.approvals import approved
from tests.helpers.keycloak import Keycloak, client_credentials_token

pytestmark = [pytest.mark.integration, pytest.mark.realm]


def keycloak_is_up(demo_env: dict[str, str]) -> None:
    """Fail (not skip) when Keycloak is not running: a skipped sign-in test proves nothing."""
    try:
        socket.create_connection(("127.0.0.1", int(demo_env["WA_KEYCLOAK_PORT"])), timeout=1).close()
    except OSError:
        pytest.fail("Keycloak is not listening: run `make stack-up` (stack.sh part keycloak) first", pytrace=False)


DPO = {"authorization": f"Bearer {pipeline.DPO_TOKEN}"}
DIRECT = Operator("test-admin-api-direct", "dpo")  # reads, in-process, what the API wrote


def before(content: object) -> bytes:
    """What a route answered before its response model: pydantic's JSON of the returned ``to_json()``."""
    return TypeAdapter(Any).dump_json(content)


@pytest.fixture
async def api(demo_env: dict[str, str]) -> AsyncIterator[tuple[httpx.AsyncClient, Actions]]:
    settings = pipeline.retention_settings(demo_env, f"test/{uuid.uuid4().hex[:8]}")

    async def opener() -> ArchiveAccess:
        return await open_access(settings)

    access = await open_access(settings)
    app = create_admin_app(settings, opener, registry=CollectorRegistry())
    try:
        async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=60, headers=DPO) as client:
            yield client, Actions(access, RetentionMetrics(CollectorRegistry()))
    finally:
        await access.close()


async def test_answers_are_the_domains_json_byte_for_byte(api: tuple[httpx.AsyncClient, Actions]) -> None:
    client, actions = api
    case = f"CASE-api-{uuid.uuid4().hex[:6]}-é"  # not ASCII: written as UTF-8, as before

    created = await client.post("/v1/holds", json={"scope": "contact", "case_ref": case, "contact": "15550009999"})
    assert created.status_code == 200, created.text
    hold_id = created.json()["hold_id"]
    stored = {h.hold_id: h for h in await actions.holds(DIRECT, include_released=True)}
    assert created.content == before(stored[hold_id].to_json())

    # A release is requested (202, the request as stored), approved by a second DPO, and shown with its outcome.
    asked = await client.post(f"/v1/holds/{hold_id}/release", json={"reason": "settled"})
    assert asked.status_code == 202, asked.text
    request_id = asked.json()["request_id"]
    assert asked.content == before((await actions.approval(DIRECT, request_id)).to_json(datetime.now(UTC)))
    await approved(actions, request_id)
    released = await client.get(f"/v1/approvals/{request_id}")
    assert released.status_code == 200, released.text
    stored = {h.hold_id: h for h in await actions.holds(DIRECT, include_released=True)}
    assert stored[hold_id].released_at is not None
    erasures = released.json()["outcome"]["erasures"]
    assert released.json()["outcome"] == orjson.loads(before({**stored[hold_id].to_json(), "erasures": erasures}))
    assert released.content == before((await actions.approval(DIRECT, request_id)).to_json(datetime.now(UTC)))

    request_ref = f"DSR-api-{uuid.uuid4().hex[:6]}"
    asked = await client.post(
        "/v1/erasures",
        json={"contact": f"1555{uuid.uuid4().int % 10**7:07d}", "request_ref": request_ref, "reason": "by e-mail"},
    )
    assert asked.status_code == 202, asked.text
    assert (asked.json()["kind"], asked.json()["state"], asked.json()["target"]["request_ref"]) == (
        "erase",
        "pending",
        request_ref,
    )
    await approved(actions, asked.json()["request_id"])
    erased = await client.get(f"/v1/approvals/{asked.json()['request_id']}")
    assert list(erased.json()["outcome"]) == [
        "request_ref",
        "status",
        "subject_refs",
        "keys_destroyed",
        "key_destroyed_at",
        "objects_deleted",
        "objects_locked",
        "events_deleted",
        "blocked_by_cases",
        "refusal_ground",
    ]
    listed = await client.get("/v1/erasures")
    mine = [r for r in await actions.erasures(DIRECT) if r.request_ref == request_ref]
    assert len(mine) == 1
    assert before(mine[0].to_json()) in listed.content

    audit = await client.get("/v1/audit", params={"limit": 1})
    assert audit.status_code == 200
    assert audit.json()[0].keys() == {
        "audit_id",
        "at",
        "actor",
        "action",
        "reason",
        "subject_ref",
        "record_count",
        "details",
    }


async def test_a_client_credentials_token_outside_the_local_demo(demo_env: dict[str, str]) -> None:
    """Outside the local demo: the provider's client-credentials token is accepted and its service account is the
    actor; no token is 401 with WWW-Authenticate: Bearer; the demo's static token is refused like any unknown one."""
    keycloak_is_up(demo_env)
    settings = pipeline.retention_settings(demo_env, f"test/{uuid.uuid4().hex[:8]}")
    assert settings.oidc is not None, "demo.env configures the admin API's OIDC issuer"

    async def opener() -> ArchiveAccess:
        return await open_access(settings)

    app = create_admin_app(settings, opener, registry=CollectorRegistry(), demo=False)
    kc = Keycloak.from_env(demo_env)
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        issued = await client_credentials_token(
            client,
            kc,
            client_id=demo_env["WA_KEYCLOAK_API_CLIENT_ID"],
            client_secret=demo_env["WA_KEYCLOAK_API_CLIENT_SECRET"],
        )
        bearer = {"authorization": f"Bearer {issued['access_token']}"}
        case = f"CASE-cc-{uuid.uuid4().hex[:6]}"
        hold = {"scope": "contact", "case_ref": case, "contact": "1555" + str(uuid.uuid4().int)[:8]}
        created = await client.post("/v1/holds", json=hold, headers=bearer)
        assert created.status_code == 200, created.text
        assert created.json()["created_by"] == "service-account-wa-archive-api"  # the audit log's actor
        released = await client.post(
            f"/v1/holds/{created.json()['hold_id']}/release", json={"reason": "case settled"}, headers=bearer
        )
        # Four eyes: the release is requested in the service account's name and waits for a person's approval.
        assert released.status_code == 202, released.text
        assert (released.json()["requested_by"], released.json()["state"]) == (
            "service-account-wa-archive-api",
            "pending",
        )
        anonymous = await client.get("/v1/holds")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        static = await client.get("/v1/holds", headers=DPO)
        assert static.status_code == 401
        altered = issued["access_token"][:-6] + (
            "AAAAAA" if not issued["access_token"].endswith("AAAAAA") else "BBBBBB"
        )
        assert (await client.get("/v1/holds", headers={"authorization": f"Bearer {altered}"})).status_code == 401
