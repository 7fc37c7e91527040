"""The local identity provider does what the console and the admin API rely on: the realm wa-archive of
deploy/local/keycloak/ (stack.sh part keycloak), driven over HTTP as a browser, a machine and an administrator
would (tests/helpers/keycloak.py)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from tests.helpers.keycloak import (
    Keycloak,
    KeycloakAdmin,
    Pkce,
    browser,
    client_credentials_token,
    exchange_code,
    login_code,
    temporary_user,
    unverified_claims,
)

pytestmark = [pytest.mark.integration, pytest.mark.realm]

CONSOLE_CLIENT = "wa-archive-console"
REDIRECT_URI = "http://127.0.0.1:8083/oidc/callback"
MFA_CLAIMS = {"id_token": {"acr": {"essential": True, "values": ["mfa"]}}}


def audiences(claims: Mapping[str, Any]) -> set[str]:
    aud = claims.get("aud")
    return {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()


async def sign_in(
    http: httpx.AsyncClient,
    keycloak: Keycloak,
    demo_env: dict[str, str],
    *,
    username: str,
    password: str,
    totp_secret: str | None = None,
    acr_values: str | None = None,
    claims: Mapping[str, Any] | None = None,
) -> tuple[list[str], dict[str, Any], dict[str, Any]]:
    """One code flow of the console's client: the pages filled, the ID token's and the access token's claims."""
    pkce, state, nonce = Pkce.new(), secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    url = keycloak.authorization_url(
        client_id=CONSOLE_CLIENT,
        redirect_uri=REDIRECT_URI,
        state=state,
        nonce=nonce,
        pkce=pkce,
        acr_values=acr_values,
        claims=claims,
    )
    back = await login_code(http, url, username=username, password=password, totp_secret=totp_secret)
    assert back.location.startswith(REDIRECT_URI + "?")
    assert back.params["state"] == state
    assert back.params["iss"] == keycloak.issuer
    tokens = await exchange_code(
        http,
        keycloak,
        client_id=CONSOLE_CLIENT,
        client_secret=demo_env["WA_CONSOLE_OIDC__CLIENT_SECRET"],
        code=back.code,
        redirect_uri=REDIRECT_URI,
        pkce=pkce,
    )
    id_claims = unverified_claims(tokens["id_token"])
    assert id_claims["nonce"] == nonce
    return back.pages, id_claims, unverified_claims(tokens["access_token"])


async def test_discovery_names_the_issuer_on_127_0_0_1(keycloak: Keycloak) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(f"{keycloak.issuer}/.well-known/openid-configuration")
    response.raise_for_status()
    document = response.json()
    assert document["issuer"] == "http://127.0.0.1:8180/realms/wa-archive"
    assert "S256" in document["code_challenge_methods_supported"]
    assert document["backchannel_logout_supported"] is True
    assert document["backchannel_logout_session_supported"] is True
    assert document["end_session_endpoint"].startswith(document["issuer"] + "/")
    assert {"pwd", "mfa"} <= set(document["acr_values_supported"])


async def test_the_api_client_gets_tokens_for_the_api_with_the_dpo_role(
    keycloak: Keycloak, demo_env: dict[str, str]
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        tokens = await client_credentials_token(
            http,
            keycloak,
            client_id=demo_env["WA_KEYCLOAK_API_CLIENT_ID"],
            client_secret=demo_env["WA_KEYCLOAK_API_CLIENT_SECRET"],
        )
        # The console's client signs people in; it has no service account to get tokens of its own.
        with pytest.raises(httpx.HTTPStatusError) as refused:
            await client_credentials_token(
                http, keycloak, client_id=CONSOLE_CLIENT, client_secret=demo_env["WA_CONSOLE_OIDC__CLIENT_SECRET"]
            )
    assert refused.value.response.json()["error"] == "unauthorized_client"
    claims = unverified_claims(tokens["access_token"])
    assert claims["iss"] == keycloak.issuer
    assert audiences(claims) == {demo_env["WA_RETENTION_OIDC__AUDIENCE"]}
    assert claims["realm_access"] == {"roles": ["archive-dpo"]}
    assert claims["azp"] == "wa-archive-api"
    # Roles are re-read at each token: five minutes at most between a change in the directory and the API.
    assert claims["exp"] - claims["iat"] == 300


async def test_a_reader_signs_in_through_keycloaks_pages(keycloak: Keycloak, demo_env: dict[str, str]) -> None:
    async with browser() as http:
        pages, id_claims, access_claims = await sign_in(
            http, keycloak, demo_env, username="reader.chloe", password=keycloak.password("reader.chloe")
        )
        # PKCE is required of the console's client: a request without a challenge comes back as an error.
        no_pkce = keycloak.authorization_url(
            client_id=CONSOLE_CLIENT, redirect_uri=REDIRECT_URI, state="s", nonce="n", pkce=None
        )
        refused = await http.get(no_pkce)
    assert pages == ["password"]
    assert id_claims["iss"] == keycloak.issuer
    assert id_claims["aud"] == CONSOLE_CLIENT
    assert id_claims["realm_access"] == {"roles": ["archive-reader"]}
    assert id_claims["preferred_username"] == "reader.chloe"
    assert id_claims["name"] == "Chloé Durand"
    assert id_claims["acr"] == "pwd"
    # The console never forwards its tokens: they are not for the admin API.
    assert "wa-archive-api" not in audiences(access_claims)
    assert refused.is_redirect
    assert "error=invalid_request" in refused.headers["location"]


async def test_step_up_asks_the_otp_and_says_acr_mfa(keycloak: Keycloak, demo_env: dict[str, str]) -> None:
    username, secret = "dpo.bruno", keycloak.totp_secrets["dpo.bruno"]
    async with browser() as http:
        plain = await sign_in(http, keycloak, demo_env, username=username, password=keycloak.password(username))
        # The same browser asks for acr mfa: its SSO session stands for the password, Keycloak asks the OTP only.
        stepped = await sign_in(
            http,
            keycloak,
            demo_env,
            username=username,
            password=keycloak.password(username),
            totp_secret=secret,
            acr_values="mfa",
        )
    async with browser() as http:
        # A new browser asking acr mfa as an essential claim: the password, then the OTP.
        essential = await sign_in(
            http,
            keycloak,
            demo_env,
            username=username,
            password=keycloak.password(username),
            totp_secret=secret,
            claims=MFA_CLAIMS,
        )
    assert (plain[0], plain[1]["acr"]) == (["password"], "pwd")
    assert (stepped[0], stepped[1]["acr"]) == (["otp"], "mfa")
    assert (essential[0], essential[1]["acr"]) == (["password", "otp"], "mfa")
    assert stepped[1]["realm_access"] == {"roles": ["archive-dpo"]}


async def test_leaving_the_dpo_group_takes_the_role_from_the_next_token(
    keycloak: Keycloak, keycloak_admin: KeycloakAdmin, demo_env: dict[str, str]
) -> None:
    async with temporary_user(keycloak_admin, groups=["dpo"]) as person:
        assert await keycloak_admin.groups_of(person.username) == ["dpo"]
        await keycloak_admin.remove_from_group(person.username, "dpo")
        async with browser() as http:
            _, id_claims, _ = await sign_in(
                http, keycloak, demo_env, username=person.username, password=person.password
            )
        await keycloak_admin.add_to_group(person.username, "readers")
        assert await keycloak_admin.groups_of(person.username) == ["readers"]
    assert "archive-dpo" not in id_claims.get("realm_access", {}).get("roles", [])
