"""Who may call the admin API and sign in to the console, without a server or a provider: the admin API's gate with
access tokens built here (the provider's discovery document and JWKS served from memory through httpx's transport),
the static tokens refused outside the local demo, both services refusing to start with no way to sign in, and the
console's pieces that keep a sign-in safe (the pending sign-in's cookie, the sealed provider secrets, where a step-up
returns to)."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm
from pydantic import SecretStr
from starlette.requests import Request

from services.actions.layer import Operator
from services.console.deps import page_of
from services.console.factory import NoSignIn, create_console_app
from services.console.oidc import PendingSignIn, ProviderSignIn
from services.console.sessions import ProviderLink, ProviderSecrets, Session, sealing_key, session_hash
from services.console.settings import ConsoleSettings
from services.core.settings import ApiOidcSettings, ConsoleOidcSettings, KeySettings, PostgresSettings, S3Settings
from services.retention.api import create_admin_app
from services.retention.api.factory import NoApiSignIn
from services.retention.api.gate import BearerTokens
from services.retention.settings import AdminToken, RetentionSettings

pytestmark = pytest.mark.unit

ISSUER = "https://id.example.org/realms/wa-archive"
KEY = base64.b64encode(bytes(32)).decode()
STATIC = base64.urlsafe_b64encode(bytes(range(7, 39))).decode()
SIGNING_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def retention(**changes: Any) -> RetentionSettings:
    base = RetentionSettings(
        s3=S3Settings(bucket="archive"),
        pg=PostgresSettings(dsn=SecretStr("postgresql://wa_retention:r@db/wa_archive")),
        keys=KeySettings(keks={"k1": SecretStr(KEY)}, current_kek_id="k1", pepper=SecretStr(KEY)),
        admin_tokens={"automation": AdminToken(token=SecretStr(STATIC), role="dpo")},
        oidc=None,
    )
    return base.model_copy(update=changes)


def provider_transport() -> httpx.MockTransport:
    """The provider's discovery document and JWKS (the only two documents the API reads)."""
    jwk = {**RSAAlgorithm.to_jwk(SIGNING_KEY.public_key(), as_dict=True), "kid": "k1", "use": "sig"}

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(
                200,
                json={
                    "issuer": ISSUER,
                    "authorization_endpoint": f"{ISSUER}/auth",
                    "token_endpoint": f"{ISSUER}/token",
                    "jwks_uri": f"{ISSUER}/certs",
                },
            )
        if request.url.path.endswith("/certs"):
            return httpx.Response(200, json={"keys": [jwk]})
        return httpx.Response(404)

    return httpx.MockTransport(answer)


def access_token(**changes: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": ["wa-archive-api", "account"],
        "sub": "3b0c-service-account",
        "azp": "wa-archive-api",
        "preferred_username": "service-account-wa-archive-api",
        "iat": now,
        "exp": now + 300,
        "realm_access": {"roles": ["archive-dpo"]},
    }
    claims.update(changes)
    return jwt.encode(
        {k: v for k, v in claims.items() if v is not None}, SIGNING_KEY, algorithm="RS256", headers={"kid": "k1"}
    )


def api_client(*, demo: bool, with_provider: bool = True) -> httpx.AsyncClient:
    bearer = None
    if with_provider:
        bearer = BearerTokens(ApiOidcSettings(issuer=ISSUER), http=httpx.AsyncClient(transport=provider_transport()))
    app = create_admin_app(retention(), cast(Any, None), demo=demo, bearer=bearer)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


@pytest.mark.parametrize(
    ("make_token", "demo", "status"),
    [
        # Past the gate, the app has no archive open here: 503 "not ready" means the caller was let in.
        pytest.param(access_token, False, 503, id="a client-credentials token"),
        pytest.param(lambda: None, False, 401, id="no token"),
        pytest.param(lambda: access_token(aud="wa-archive-console"), False, 401, id="a token for another audience"),
        pytest.param(lambda: access_token(exp=int(time.time()) - 3600), False, 401, id="an expired token"),
        pytest.param(lambda: access_token(iss="https://evil.example.org"), False, 401, id="another issuer"),
        pytest.param(lambda: access_token(realm_access={"roles": ["offline_access"]}), False, 403, id="no mapped role"),
        pytest.param(
            lambda: access_token(realm_access={"roles": ["archive-reader"]}), False, 403, id="a reader erasing"
        ),
        pytest.param(lambda: STATIC, False, 401, id="the static token outside the local demo"),
        pytest.param(lambda: STATIC, True, 503, id="the static token in the local demo"),
    ],
)
async def test_who_may_call_the_admin_api(make_token: Callable[[], str | None], demo: bool, status: int) -> None:
    # Made when the test runs, not when it is collected: a token lives 5 minutes, the suite longer.
    token = make_token()
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with api_client(demo=demo) as client:
        answer = await client.post("/v1/erasures", json={"contact": "x", "request_ref": "DSR-1"}, headers=headers)
    assert answer.status_code == status, answer.text
    if status == 401:
        assert answer.headers["www-authenticate"].startswith("Bearer")


def test_the_admin_api_refuses_to_start_without_a_provider_outside_the_local_demo() -> None:
    with pytest.raises(NoApiSignIn, match="WA_RETENTION_OIDC__ISSUER"):
        create_admin_app(retention(), cast(Any, None), demo=False)
    assert create_admin_app(retention(), cast(Any, None), demo=True)  # the demo's static tokens


def test_the_console_refuses_to_start_without_a_provider_outside_the_local_demo() -> None:
    settings = ConsoleSettings(oidc=None)
    with pytest.raises(NoSignIn, match="WA_CONSOLE_OIDC__ISSUER"):
        create_console_app(settings, retention(), cast(Any, None), demo=False)
    assert create_console_app(settings, retention(), cast(Any, None), demo=True, serve_ops=False)


@given(
    state=st.text(min_size=1, max_size=60),
    back=st.text(max_size=80),
    acr=st.none() | st.text(max_size=10),
)
@settings(max_examples=50)
def test_a_pending_sign_in_comes_back_from_its_cookie_and_answers_its_state_only(
    state: str, back: str, acr: str | None
) -> None:
    pending = PendingSignIn(
        state=state, nonce="n", verifier="v" * 43, back=back, locale="fr", timezone="Europe/Paris", acr=acr
    )
    again = PendingSignIn.from_cookie(pending.cookie())
    assert again == pending
    assert again.answers(state)
    assert not again.answers(state + "x")
    assert not again.answers(None)


@pytest.mark.parametrize("cookie", [None, "", "not base64!", base64.urlsafe_b64encode(b'{"s": 1}').decode()])
def test_a_pending_sign_in_cookie_that_is_not_one_is_none(cookie: str | None) -> None:
    assert PendingSignIn.from_cookie(cookie) is None


def test_the_provider_secrets_open_only_with_the_cookies_id_and_for_their_session() -> None:
    session_id, other_id = "a" * 43, "b" * 43
    secrets_ = ProviderSecrets(refresh_token="refresh-xyz", id_token="eyJ.id.token", name="Alice Martin")
    sealed = secrets_.seal(sealing_key(session_id), session_hash(session_id))
    assert b"refresh-xyz" not in sealed
    assert b"Alice" not in sealed
    assert ProviderSecrets.open(sealed, sealing_key(session_id), session_hash(session_id)) == secrets_
    # Another session's key, the table's own digest as a key, or the row of another session: nothing opens.
    assert ProviderSecrets.open(sealed, sealing_key(other_id), session_hash(session_id)) is None
    assert ProviderSecrets.open(sealed, session_hash(session_id), session_hash(session_id)) is None
    assert ProviderSecrets.open(sealed, sealing_key(session_id), session_hash(other_id)) is None
    assert sealing_key(session_id) != hashlib.sha256(session_id.encode()).digest()
    assert "refresh-xyz" not in repr(secrets_)


def request_with(method: str, path: str, referer: str | None) -> Request:
    headers = [(b"host", b"console.example.org")] + ([(b"referer", referer.encode())] if referer else [])
    return Request(
        {"type": "http", "method": method, "path": path, "headers": headers, "scheme": "https", "query_string": b""}
    )


@pytest.mark.parametrize(
    ("method", "path", "referer", "expected"),
    [
        pytest.param(
            "POST", "/dpo/holds/release", "https://console.example.org/dpo/holds", "/dpo/holds", id="the form's page"
        ),
        pytest.param(
            "POST", "/exports", "https://console.example.org/conversation?x=1", "/conversation", id="no query"
        ),
        pytest.param("POST", "/exports", "https://evil.example.org/dpo/holds", "/exports", id="another site"),
        pytest.param(
            "POST", "/exports", "https://console.example.org//evil.example.org", "/exports", id="protocol-relative"
        ),
        pytest.param("POST", "/exports", None, "/exports", id="no referer"),
    ],
)
def test_a_step_up_returns_to_the_console_page_it_came_from(
    method: str, path: str, referer: str | None, expected: str
) -> None:
    assert page_of(request_with(method, path, referer)) == expected


NOW = 1_900_000_000.0


def provider_session(acr: str | None, stepped_up_at: float | None) -> Session:
    link = ProviderLink(
        sid_digest=None,
        sub_digest=bytes(32),
        acr=acr,
        roles_read_at=datetime.now(UTC),
        secrets=ProviderSecrets(refresh_token=None, id_token=None, name="Alice", stepped_up_at=stepped_up_at),
    )
    return Session(
        session_hash=bytes(32),
        operator=Operator("dpo.alice", "dpo"),
        csrf_token="c",
        locale="en",
        timezone="UTC",
        provider=link,
    )


@pytest.mark.parametrize(
    ("step_up_acr", "acr", "stepped_up_at", "needed"),
    [
        pytest.param("mfa", "mfa", NOW - 10, False, id="stepped up 10 s ago"),
        pytest.param("mfa", "mfa", NOW - 300, False, id="stepped up at the limit"),
        pytest.param("mfa", "mfa", NOW - 301, True, id="stepped up too long ago"),
        pytest.param("mfa", "mfa", None, True, id="acr without a time"),
        pytest.param("mfa", "pwd", NOW - 10, True, id="a password only"),
        pytest.param("mfa", None, None, True, id="no acr"),
        pytest.param("", "pwd", None, False, id="no step-up configured"),
    ],
)
async def test_when_a_session_must_step_up(
    step_up_acr: str, acr: str | None, stepped_up_at: float | None, needed: bool
) -> None:
    settings = ConsoleOidcSettings(
        issuer=ISSUER, client_id="wa-archive-console", step_up_acr=step_up_acr, step_up_max_age_s=300
    )
    provider = ProviderSignIn(settings, clock=lambda: NOW)
    try:
        assert provider.step_up_needed(provider_session(acr, stepped_up_at)) is needed
    finally:
        await provider.close()
