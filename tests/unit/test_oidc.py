"""The OpenID Connect checks (services/core/oidc.py) on tokens built here, with keys generated here and a JWKS served
from memory: what passes, each way a token is refused, the JWKS refreshed once for many unknown key ids, role
mapping from a claim path, PKCE."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from services.core.oidc import (
    ALLOWED_ALGORITHMS,
    BACKCHANNEL_LOGOUT_EVENT,
    LEEWAY_S,
    JwksCache,
    ProviderMetadata,
    ProviderUnavailable,
    TokenRefused,
    archive_role,
    b64url,
    check_times,
    code_challenge,
    new_code_verifier,
    provider_roles,
    verify_access_token,
    verify_id_token,
    verify_logout_token,
)

ISSUER = "https://id.example.org/realms/wa-archive"
CLIENT = "wa-archive-console"
NOW = 1_900_000_000.0
NONCE = "n-0S6_WzA2Mj"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig"}


@dataclass
class Provider:
    """A JWKS served from memory, counting the fetches."""

    keys: list[dict[str, Any]] = field(
        default_factory=lambda: [public_jwk(RSA_KEY, "rsa-1"), public_jwk(EC_KEY, "ec-1")]
    )
    fetches: int = 0

    async def jwks(self) -> dict[str, Any]:
        self.fetches += 1
        await asyncio.sleep(0)  # let concurrent requests pile up behind the lock
        return {"keys": list(self.keys)}


def id_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "f0c1c3a2-0000-4000-8000-000000000001",
        "azp": CLIENT,
        "iat": int(NOW) - 5,
        "exp": int(NOW) + 300,
        "nonce": NONCE,
        "preferred_username": "dpo.alice",
        "name": "Alice Martin",
        "sid": "sid-1",
        "acr": "1",
        "realm_access": {"roles": ["archive-dpo", "offline_access"]},
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def signed(claims: dict[str, Any], key: Any = RSA_KEY, alg: str = "RS256", kid: str | None = "rsa-1") -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def unsigned(claims: dict[str, Any]) -> str:
    header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": "rsa-1"}).encode())
    return f"{header}.{b64url(json.dumps(claims).encode())}."


def hs256_with_public_key(claims: dict[str, Any]) -> str:
    """The algorithm-confusion attack: HMAC keyed by the provider's public key (which anyone may read)."""
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    body = b64url(json.dumps(claims).encode())
    mac = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url(mac)}"


async def check_id_token(token: str, provider: Provider | None = None, nonce: str = NONCE) -> str:
    keys = JwksCache((provider or Provider()).jwks)
    identity = await verify_id_token(token, keys, issuer=ISSUER, client_id=CLIENT, nonce=nonce, now=NOW)
    return identity.username


async def test_a_good_id_token_gives_the_person() -> None:
    keys = JwksCache(Provider().jwks)
    identity = await verify_id_token(signed(id_claims()), keys, issuer=ISSUER, client_id=CLIENT, nonce=NONCE, now=NOW)
    assert (identity.username, identity.name, identity.sid, identity.acr) == ("dpo.alice", "Alice Martin", "sid-1", "1")
    es = signed(id_claims(), key=EC_KEY, alg="ES256", kid="ec-1")
    assert (await verify_id_token(es, keys, issuer=ISSUER, client_id=CLIENT, nonce=NONCE, now=NOW)).subject


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        pytest.param(
            lambda: signed(id_claims(iss="https://evil.example.org/realms/wa-archive")), "issuer", id="wrong issuer"
        ),
        pytest.param(lambda: signed(id_claims(iss=ISSUER + "/")), "issuer", id="issuer with a trailing slash"),
        pytest.param(lambda: signed(id_claims(aud="another-client", azp=None)), "audience", id="wrong audience"),
        pytest.param(
            lambda: signed(id_claims(aud=[CLIENT, "other"], azp=None)), "audience", id="several audiences, no azp"
        ),
        pytest.param(lambda: signed(id_claims(azp="other")), "audience", id="issued to another client"),
        pytest.param(lambda: signed(id_claims(exp=int(NOW - LEEWAY_S) - 1)), "expired", id="expired"),
        pytest.param(lambda: signed(id_claims(nbf=int(NOW + LEEWAY_S) + 10)), "not_yet_valid", id="not valid yet"),
        pytest.param(lambda: signed(id_claims(exp=None)), "claims", id="no exp"),
        pytest.param(lambda: signed(id_claims(iat=None)), "claims", id="no iat"),
        pytest.param(lambda: signed(id_claims(sub=None)), "claims", id="no sub"),
        pytest.param(lambda: signed(id_claims(exp="tomorrow")), "claims", id="exp not a number"),
        pytest.param(lambda: unsigned(id_claims()), "algorithm", id="alg none"),
        pytest.param(lambda: hs256_with_public_key(id_claims()), "algorithm", id="HS256 signed with the public key"),
        pytest.param(lambda: signed(id_claims(), key=secrets.token_bytes(32), alg="HS256"), "algorithm", id="HS256"),
        pytest.param(lambda: signed(id_claims(), key=OTHER_RSA_KEY), "signature", id="another key, the provider's kid"),
        pytest.param(lambda: signed(id_claims(), key=OTHER_RSA_KEY, kid="rsa-9"), "key", id="another key, unknown kid"),
        pytest.param(lambda: signed(id_claims(), key=EC_KEY, alg="ES256", kid="rsa-1"), "key", id="EC alg, RSA key"),
        pytest.param(lambda: signed(id_claims(nonce="another-nonce")), "nonce", id="replayed with another nonce"),
        pytest.param(lambda: signed(id_claims(nonce=None)), "nonce", id="no nonce"),
        pytest.param(lambda: "not.a.jwt", "malformed", id="not a JWT"),
        pytest.param(lambda: signed(id_claims())[:-8] + "AAAAAAAA", "signature", id="signature altered"),
    ],
)
async def test_an_id_token_is_refused(make: Callable[[], str], reason: str) -> None:
    with pytest.raises(TokenRefused) as refused:
        await check_id_token(make())
    assert refused.value.reason == reason
    assert "eyJ" not in str(refused.value)  # the message never holds the token


async def test_a_refresh_id_token_needs_no_nonce() -> None:
    keys = JwksCache(Provider().jwks)
    token = signed(id_claims(nonce=None))
    identity = await verify_id_token(token, keys, issuer=ISSUER, client_id=CLIENT, nonce=None, now=NOW)
    assert identity.username == "dpo.alice"


@given(alg=st.text(min_size=0, max_size=12).filter(lambda a: a not in ALLOWED_ALGORITHMS))
@settings(max_examples=60)
def test_an_algorithm_outside_the_allow_list_is_refused_before_any_key(alg: str) -> None:
    header = b64url(json.dumps({"alg": alg, "kid": "rsa-1"}).encode())
    token = f"{header}.{b64url(json.dumps(id_claims()).encode())}.c2ln"
    provider = Provider()
    with pytest.raises(TokenRefused) as refused:
        asyncio.run(check_id_token(token, provider))
    assert refused.value.reason in ("algorithm", "malformed")
    assert provider.fetches == 0


async def test_many_unknown_key_ids_cause_one_refresh_per_interval() -> None:
    provider = Provider()
    clock = [1000.0]
    keys = JwksCache(provider.jwks, min_refresh_s=60, clock=lambda: clock[0])
    await verify_access_token(signed(id_claims()), keys, issuer=ISSUER, audience=CLIENT, now=NOW)
    assert provider.fetches == 1
    # A minute later the provider rotates to a new key; tokens signed with it and a flood with made-up key ids
    # arrive together.
    clock[0] += 61
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    provider.keys.append(public_jwk(rotated, "rsa-2"))
    good = [signed(id_claims(), key=rotated, kid="rsa-2") for _ in range(20)]
    flood = [signed(id_claims(), key=rotated, kid=secrets.token_hex(8)) for _ in range(200)]

    async def outcome(token: str) -> str:
        try:
            await verify_access_token(token, keys, issuer=ISSUER, audience=CLIENT, now=NOW)
        except TokenRefused as exc:
            return exc.reason
        return "ok"

    outcomes = await asyncio.gather(*(outcome(t) for t in flood[:100] + good + flood[100:]))
    assert outcomes.count("ok") == 20
    assert outcomes.count("key") == 200
    assert provider.fetches == 2
    # Within the interval a new unknown kid is refused without a fetch; after it, one fetch again.
    assert await outcome(signed(id_claims(), kid="rsa-3")) == "key"
    assert provider.fetches == 2
    clock[0] += 61
    assert await outcome(signed(id_claims(), kid="rsa-3")) == "key"
    assert provider.fetches == 3


async def test_an_unreadable_jwks_is_the_provider_unavailable_and_is_not_fetched_again_at_once() -> None:
    calls = 0

    async def broken() -> Any:
        nonlocal calls
        calls += 1
        return {"not": "a jwks"}

    keys = JwksCache(broken, min_refresh_s=60)
    for _ in range(2):
        with pytest.raises((ProviderUnavailable, TokenRefused)):
            await verify_access_token(signed(id_claims()), keys, issuer=ISSUER, audience=CLIENT, now=NOW)
    assert calls == 1


async def test_an_access_token_for_the_api() -> None:
    keys = JwksCache(Provider().jwks)
    claims = id_claims(aud=["wa-archive-api", "account"], azp="wa-archive-automation", nonce=None)
    found = await verify_access_token(signed(claims), keys, issuer=ISSUER, audience="wa-archive-api", now=NOW)
    assert found["azp"] == "wa-archive-automation"
    with pytest.raises(TokenRefused, match="audience"):
        await verify_access_token(signed(id_claims()), keys, issuer=ISSUER, audience="wa-archive-api", now=NOW)


def logout_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": CLIENT,
        "iat": int(NOW) - 2,
        "jti": secrets.token_hex(8),
        "sid": "sid-1",
        "sub": "f0c1c3a2-0000-4000-8000-000000000001",
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


async def test_a_logout_token_names_the_session() -> None:
    keys = JwksCache(Provider().jwks)
    request = await verify_logout_token(signed(logout_claims()), keys, issuer=ISSUER, client_id=CLIENT, now=NOW)
    assert (request.sid, request.subject) == ("sid-1", "f0c1c3a2-0000-4000-8000-000000000001")
    assert request.issued_at == logout_claims()["iat"]  # the sessions begun after it are not its to end
    only_sub = await verify_logout_token(
        signed(logout_claims(sid=None)), keys, issuer=ISSUER, client_id=CLIENT, now=NOW
    )
    assert only_sub.sid is None
    assert only_sub.subject


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        pytest.param(logout_claims(nonce="x"), "claims", id="with a nonce (an ID token replayed)"),
        pytest.param(logout_claims(events=None), "claims", id="no events"),
        pytest.param(logout_claims(events={"other": {}}), "claims", id="another event"),
        pytest.param(logout_claims(sid=None, sub=None), "claims", id="neither sid nor sub"),
        pytest.param(logout_claims(iat=None), "claims", id="no iat"),
        pytest.param(logout_claims(iat=int(NOW) - 3600), "expired", id="issued an hour ago"),
        pytest.param(logout_claims(aud="another-client"), "audience", id="for another client"),
        pytest.param(logout_claims(iss="https://evil.example.org"), "issuer", id="another issuer"),
    ],
)
async def test_a_logout_token_is_refused(claims: dict[str, Any], reason: str) -> None:
    keys = JwksCache(Provider().jwks)
    with pytest.raises(TokenRefused) as refused:
        await verify_logout_token(signed(claims), keys, issuer=ISSUER, client_id=CLIENT, now=NOW)
    assert refused.value.reason == reason


@given(
    exp_offset=st.floats(min_value=-10_000, max_value=10_000), nbf_offset=st.floats(min_value=-10_000, max_value=10_000)
)
@settings(max_examples=200)
def test_times_pass_exactly_within_the_leeway(exp_offset: float, nbf_offset: float) -> None:
    claims = {"exp": NOW + exp_offset, "nbf": NOW + nbf_offset}
    passes = exp_offset >= -LEEWAY_S and nbf_offset <= LEEWAY_S
    try:
        check_times(claims, now=NOW, leeway_s=LEEWAY_S, require_exp=True)
    except TokenRefused:
        assert not passes
    else:
        assert passes


@pytest.mark.parametrize(
    ("claims", "path", "expected"),
    [
        pytest.param({"realm_access": {"roles": ["archive-dpo", "x"]}}, "realm_access.roles", "dpo", id="keycloak"),
        pytest.param({"roles": ["archive-reader"]}, "roles", "reader", id="roles claim"),
        pytest.param({"groups": "archive-reader"}, "groups", "reader", id="one group as a string"),
        pytest.param({"roles": ["archive-reader", "archive-dpo"]}, "roles", "dpo", id="the strongest wins"),
        pytest.param({"roles": ["offline_access"]}, "roles", None, id="no mapped role"),
        pytest.param({"realm_access": "archive-dpo"}, "realm_access.roles", None, id="not an object on the path"),
        pytest.param(
            {"https://example.org/roles": ["archive-dpo"]}, "https://example.org/roles", "dpo", id="dotted name"
        ),
        pytest.param({"roles": [1, None, "archive-reader"]}, "roles", "reader", id="non-strings ignored"),
        pytest.param({}, "roles", None, id="no claim"),
    ],
)
def test_roles_from_a_claim_path(claims: dict[str, Any], path: str, expected: str | None) -> None:
    role_map = {"archive-reader": "reader", "archive-dpo": "dpo"}
    assert archive_role(provider_roles(claims, path), role_map) == expected  # type: ignore[arg-type]


@given(st.lists(st.sampled_from(["archive-reader", "archive-dpo", "other", "admin"]), max_size=6))
@settings(max_examples=50)
def test_the_mapped_role_is_dpo_exactly_when_a_dpo_role_is_held(roles: list[str]) -> None:
    role = archive_role(roles, {"archive-reader": "reader", "archive-dpo": "dpo"})
    assert (role == "dpo") == ("archive-dpo" in roles)
    assert (role is None) == (not {"archive-reader", "archive-dpo"} & set(roles))


def test_pkce_s256_matches_rfc_7636() -> None:
    # RFC 7636 Appendix B.
    assert (
        code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
    verifier = new_code_verifier()
    assert 43 <= len(verifier) <= 128
    assert set(verifier) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def test_a_discovery_document_for_another_issuer_is_refused() -> None:
    document = {
        "issuer": "https://evil.example.org",
        "authorization_endpoint": "a",
        "token_endpoint": "t",
        "jwks_uri": "j",
    }
    with pytest.raises(ProviderUnavailable, match="issuer"):
        ProviderMetadata.from_document(document, ISSUER)
    with pytest.raises(ProviderUnavailable, match="jwks_uri"):
        ProviderMetadata.from_document({"issuer": ISSUER, "authorization_endpoint": "a", "token_endpoint": "t"}, ISSUER)
