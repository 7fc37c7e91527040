"""OpenID Connect, the parts the archive needs: discovery, a JWKS cache, the checks of ID tokens, access tokens and
logout tokens, role mapping, and the PKCE, state and nonce helpers. The console signs people in with it
(services/console/oidc.py); the admin API checks bearer access tokens with it (services/retention/api/gate.py).

The decisions are pure and take the clock (``now``, seconds since the epoch); the only I/O is the provider's JSON
documents, read through an injected :data:`FetchJSON` (tests serve a JWKS from memory), and the token endpoint
(:class:`OidcClient`).

What a token must pass (:func:`verify_jwt`, then the kind's own checks):

- its header's ``alg`` is one of :data:`ALLOWED_ALGORITHMS` (asymmetric only): ``none`` and every ``HS*`` are
  refused before any key is looked at, so a token "signed" with HMAC keyed by the provider's public key (the
  classic algorithm-confusion attack) never reaches a verifier;
- its key is the provider's, by ``kid``, from :class:`JwksCache`; a key whose type or declared ``alg`` does not fit
  the header's ``alg`` is refused;
- its signature, issuer (exactly), audience, and ``exp``/``nbf``/``iat`` within :data:`LEEWAY_S`.

A refusal is :class:`TokenRefused` with a bounded ``reason`` (a metric label, a log field); the token itself is never
put in a message or a log. A provider that cannot be reached or answers nonsense is :class:`ProviderUnavailable`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, get_args
from urllib.parse import quote_plus, urlencode

import httpx
import jwt
from jwt.exceptions import InvalidKeyError, PyJWKError, PyJWTError

from services.core.vocabulary import ROLES, Role

# Asymmetric signatures only. A symmetric algorithm would verify with a secret the provider shares with every
# client, or, for a careless verifier, with the provider's *public* key: never accepted.
ALLOWED_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
# The key type each algorithm family needs (a JWK of another type is refused, whatever PyJWT would make of it).
_KEY_TYPE: Final = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
# Clocks of the provider and the archive differ by a few seconds at most (both run NTP); a minute is generous and
# still far below a token's lifetime.
LEEWAY_S: Final = 60.0
# An unknown key id fetches the JWKS again at most this often: a flood of tokens with made-up key ids costs one
# request to the provider per interval, not one each.
JWKS_MIN_REFRESH_S: Final = 60.0
# A logout token older than this is refused (OpenID Connect Back-Channel Logout 1.0, §2.6: iat "too far in the past").
LOGOUT_TOKEN_MAX_AGE_S: Final = 300.0
BACKCHANNEL_LOGOUT_EVENT: Final = "http://schemas.openid.net/event/backchannel-logout"

RefusalReason: TypeAlias = Literal[
    "malformed", "algorithm", "key", "signature", "issuer", "audience", "expired", "not_yet_valid", "nonce", "claims"
]
REFUSAL_REASONS: Final[tuple[RefusalReason, ...]] = get_args(RefusalReason)

FetchJSON: TypeAlias = Callable[[str], Awaitable[Any]]
"""GET a URL of the provider, its body parsed as JSON; ProviderUnavailable when it cannot."""


class TokenRefused(Exception):
    """A token that does not pass; ``reason`` says which check, in a word (never the token)."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"token refused ({reason}): {detail}")
        self.reason = reason


class ProviderUnavailable(Exception):
    """The identity provider cannot be reached, or answered something that is not what the protocol says."""


# ---------------------------------------------------------------------------------------------- helpers


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def new_state() -> str:
    """A random ``state`` (or ``nonce``): 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


def new_code_verifier() -> str:
    """A PKCE code verifier (RFC 7636 §4.1): 64 random bytes, 86 URL-safe characters (43 to 128 allowed)."""
    return secrets.token_urlsafe(64)


def code_challenge(verifier: str) -> str:
    """The S256 challenge of ``verifier``: base64url(SHA-256(verifier)), unpadded (RFC 7636 §4.2)."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def same_secret(offered: str | None, expected: str) -> bool:
    """Constant-time comparison of a state or nonce."""
    return offered is not None and hmac.compare_digest(offered.encode(), expected.encode())


# ---------------------------------------------------------------------------------------------- discovery


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderMetadata:
    """What the archive reads of a provider's ``.well-known/openid-configuration``."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None = None
    userinfo_endpoint: str | None = None

    @classmethod
    def from_document(cls, document: Any, expected_issuer: str) -> ProviderMetadata:
        """The metadata of a discovery document; ProviderUnavailable when a required field is missing or its
        ``issuer`` is not exactly ``expected_issuer`` (OpenID Connect Discovery §4.3: a document naming another
        issuer must not be used)."""
        if not isinstance(document, dict):
            raise ProviderUnavailable("the discovery document is not a JSON object")
        if document.get("issuer") != expected_issuer:
            raise ProviderUnavailable(
                f"the discovery document names issuer {document.get('issuer')!r}, not the one configured"
            )
        try:
            return cls(
                issuer=expected_issuer,
                authorization_endpoint=str(document["authorization_endpoint"]),
                token_endpoint=str(document["token_endpoint"]),
                jwks_uri=str(document["jwks_uri"]),
                end_session_endpoint=document.get("end_session_endpoint"),
                userinfo_endpoint=document.get("userinfo_endpoint"),
            )
        except KeyError as exc:
            raise ProviderUnavailable(f"the discovery document has no {exc.args[0]}") from None


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


# ---------------------------------------------------------------------------------------------- keys


class JwksCache:
    """The provider's signing keys by ``kid``, fetched on first use and again when a token names a key id it does
    not know (the provider rotated its keys).

    Refreshes are coalesced and rate-limited: one lock serialises them, and a key id still unknown within
    ``min_refresh_s`` of the last fetch (successful or not) is refused without fetching. So any number of concurrent
    requests with unknown key ids cause at most one fetch per interval. ``clock`` is monotonic seconds."""

    def __init__(
        self,
        fetch_jwks: Callable[[], Awaitable[Any]],
        *,
        min_refresh_s: float = JWKS_MIN_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch_jwks = fetch_jwks
        self._min_refresh_s = min_refresh_s
        self._clock = clock
        self._keys: dict[str | None, dict[str, Any]] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def jwk(self, kid: str | None) -> dict[str, Any]:
        """The JWK of ``kid`` (a token without ``kid``: the provider's only signing key); TokenRefused("key") when
        the provider does not have it, ProviderUnavailable when its JWKS cannot be read."""
        found = self._lookup(kid)
        if found is not None:
            return found
        async with self._lock:
            found = self._lookup(kid)  # another request may have refreshed while this one waited
            if found is not None:
                return found
            now = self._clock()
            if self._fetched_at is not None and now - self._fetched_at < self._min_refresh_s:
                raise TokenRefused("key", "the token's key id is not one of the provider's keys")
            self._fetched_at = now
            self.fetches += 1
            self._keys = signing_keys(await self._fetch_jwks())
        found = self._lookup(kid)
        if found is None:
            raise TokenRefused("key", "the token's key id is not one of the provider's keys")
        return found

    def _lookup(self, kid: str | None) -> dict[str, Any] | None:
        if kid is None:
            only = [key for k, key in self._keys.items() if k is not None] or list(self._keys.values())
            return only[0] if len(only) == 1 else None
        return self._keys.get(kid)


def signing_keys(document: Any) -> dict[str | None, dict[str, Any]]:
    """The signature keys of a JWKS document by ``kid`` (keys meant for encryption are left out);
    ProviderUnavailable when it is not a JWKS."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ProviderUnavailable("the JWKS is not a JSON object with a list of keys")
    keys: dict[str | None, dict[str, Any]] = {}
    for key in document["keys"]:
        if isinstance(key, dict) and key.get("use", "sig") == "sig" and isinstance(key.get("kty"), str):
            kid = key.get("kid")
            keys[kid if isinstance(kid, str) else None] = key
    return keys


def _verifying_key(jwk: Mapping[str, Any], alg: str) -> Any:
    if _KEY_TYPE.get(alg[:2]) != jwk.get("kty"):
        raise TokenRefused("key", f"a {jwk.get('kty')} key cannot verify {alg}")
    if "alg" in jwk and jwk["alg"] != alg:
        raise TokenRefused("key", f"the key is for {jwk['alg']}, the token says {alg}")
    try:
        return jwt.PyJWK(dict(jwk), algorithm=alg).key
    except (PyJWKError, InvalidKeyError, ValueError, TypeError) as exc:
        raise TokenRefused("key", f"the provider's key cannot be read ({type(exc).__name__})") from None


# ---------------------------------------------------------------------------------------------- tokens


async def verify_jwt(
    token: str,
    keys: JwksCache,
    *,
    issuer: str,
    audience: str,
    now: float,
    leeway_s: float = LEEWAY_S,
    require_exp: bool = True,
) -> dict[str, Any]:
    """The claims of ``token`` once its algorithm, key, signature, issuer, audience and times pass (see the module
    docstring); TokenRefused otherwise. ``aud`` may be a string or a list that contains ``audience``; ``exp`` is
    required unless ``require_exp`` is false (a logout token's is optional)."""
    try:
        header = jwt.get_unverified_header(token)
    except PyJWTError:
        raise TokenRefused("malformed", "not a signed JWT") from None
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise TokenRefused("algorithm", f"algorithm {str(alg)[:16]!r} is not accepted")
    kid = header.get("kid")
    key = _verifying_key(await keys.jwk(kid if isinstance(kid, str) else None), alg)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=[alg],
            # The times are checked below against the clock passed in; issuer and audience too, for clear reasons.
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise TokenRefused("signature", "the signature does not verify with the provider's key") from None
    except PyJWTError as exc:
        raise TokenRefused("malformed", f"the token cannot be read ({type(exc).__name__})") from None
    if claims.get("iss") != issuer:
        raise TokenRefused("issuer", "the token was issued by another issuer")
    if audience not in audiences(claims):
        raise TokenRefused("audience", "the token is not meant for this service")
    check_times(claims, now=now, leeway_s=leeway_s, require_exp=require_exp)
    return claims


def audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRefused("claims", f"{name} is not a number")
    return float(value)


def check_times(claims: Mapping[str, Any], *, now: float, leeway_s: float, require_exp: bool) -> None:
    """``exp`` in the future, ``nbf`` and ``iat`` not in the future, each within ``leeway_s``."""
    exp = _number(claims, "exp")
    if exp is None and require_exp:
        raise TokenRefused("claims", "the token has no exp")
    if exp is not None and now > exp + leeway_s:
        raise TokenRefused("expired", "the token has expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and now + leeway_s < nbf:
        raise TokenRefused("not_yet_valid", "the token is not valid yet")
    iat = _number(claims, "iat")
    if iat is not None and now + leeway_s < iat:
        raise TokenRefused("not_yet_valid", "the token was issued in the future")


def check_authorized_party(claims: Mapping[str, Any], client_id: str) -> None:
    """OpenID Connect Core §3.1.3.7: with several audiences ``azp`` must be present; when present it must be this
    client."""
    azp = claims.get("azp")
    if len(audiences(claims)) > 1 and azp is None:
        raise TokenRefused("audience", "a token for several audiences without azp")
    if azp is not None and azp != client_id:
        raise TokenRefused("audience", "the token was issued to another client (azp)")


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who an ID token says signed in: ``username`` is the audit log's actor (``preferred_username``), ``name`` the
    one shown in the page header; ``sid`` the provider's session (back-channel logout names it)."""

    subject: str
    username: str
    name: str
    sid: str | None
    acr: str | None
    claims: Mapping[str, Any]


def identity_of(claims: Mapping[str, Any]) -> Identity:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise TokenRefused("claims", "the token has no sub")
    username = claims.get("preferred_username")
    username = username if isinstance(username, str) and username else sub
    name = claims.get("name")
    sid, acr = claims.get("sid"), claims.get("acr")
    return Identity(
        subject=sub,
        username=username,
        name=name if isinstance(name, str) and name else username,
        sid=sid if isinstance(sid, str) else None,
        acr=acr if isinstance(acr, str) else None,
        claims=claims,
    )


async def verify_id_token(
    token: str,
    keys: JwksCache,
    *,
    issuer: str,
    client_id: str,
    nonce: str | None,
    now: float,
    leeway_s: float = LEEWAY_S,
) -> Identity:
    """An ID token's identity (OpenID Connect Core §3.1.3.7): :func:`verify_jwt` for this client, ``azp``, ``iat``
    present, and its ``nonce`` exactly ``nonce`` (None: a token from a refresh, which need not carry one)."""
    claims = await verify_jwt(token, keys, issuer=issuer, audience=client_id, now=now, leeway_s=leeway_s)
    check_authorized_party(claims, client_id)
    if _number(claims, "iat") is None:
        raise TokenRefused("claims", "the ID token has no iat")
    if nonce is not None and not same_secret(
        claims.get("nonce") if isinstance(claims.get("nonce"), str) else None, nonce
    ):
        raise TokenRefused("nonce", "the ID token's nonce is not the one this sign-in sent")
    return identity_of(claims)


async def verify_access_token(
    token: str, keys: JwksCache, *, issuer: str, audience: str, now: float, leeway_s: float = LEEWAY_S
) -> dict[str, Any]:
    """A bearer access token's claims (RFC 9068 as far as providers agree): signature, issuer, ``audience``, expiry."""
    return await verify_jwt(token, keys, issuer=issuer, audience=audience, now=now, leeway_s=leeway_s)


@dataclass(frozen=True, slots=True)
class LogoutRequest:
    """Whose sessions a back-channel logout ends: the provider session ``sid``, or every session of ``subject``;
    ``issued_at`` is the token's ``iat`` (a replayed token must not end the sessions begun after it was issued)."""

    sid: str | None
    subject: str | None
    issued_at: float


async def verify_logout_token(
    token: str,
    keys: JwksCache,
    *,
    issuer: str,
    client_id: str,
    now: float,
    leeway_s: float = LEEWAY_S,
    max_age_s: float = LOGOUT_TOKEN_MAX_AGE_S,
) -> LogoutRequest:
    """A logout token (OpenID Connect Back-Channel Logout 1.0 §2.6): signature, issuer, audience, ``iat`` present
    and recent, the back-channel logout event, ``sid`` or ``sub``, and no ``nonce`` (so that an ID token cannot be
    replayed as one)."""
    claims = await verify_jwt(
        token, keys, issuer=issuer, audience=client_id, now=now, leeway_s=leeway_s, require_exp=False
    )
    iat = _number(claims, "iat")
    if iat is None:
        raise TokenRefused("claims", "the logout token has no iat")
    if now - iat > max_age_s + leeway_s:
        raise TokenRefused("expired", "the logout token was issued too long ago")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        raise TokenRefused("claims", "the logout token has no back-channel logout event")
    if "nonce" in claims:
        raise TokenRefused("claims", "a logout token must not carry a nonce")
    sid, sub = claims.get("sid"), claims.get("sub")
    sid = sid if isinstance(sid, str) and sid else None
    sub = sub if isinstance(sub, str) and sub else None
    if sid is None and sub is None:
        raise TokenRefused("claims", "the logout token names neither sid nor sub")
    return LogoutRequest(sid, sub, iat)


# ---------------------------------------------------------------------------------------------- roles


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` (``realm_access.roles``), or None. A claim whose own name has a dot (as some
    providers' namespaced claims do: ``https://example.org/roles``) is found whole first."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def provider_roles(claims: Mapping[str, Any], path: str) -> list[str]:
    """The provider's role names at ``path``: a list of strings, or one string; anything else, none."""
    value = claim_at(claims, path)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def archive_role(roles: Sequence[str], role_map: Mapping[str, Role]) -> Role | None:
    """The strongest archive role that ``role_map`` gives any of ``roles`` (``dpo`` over ``reader``: the order of
    :data:`~services.core.vocabulary.ROLES`), or None when none is mapped."""
    mapped = {role_map[r] for r in roles if r in role_map}
    return max(mapped, key=ROLES.index) if mapped else None


# ---------------------------------------------------------------------------------------------- the provider


@dataclass(frozen=True, slots=True)
class TokenSet:
    """What the token endpoint answered (its secrets stay in memory; the console seals what it keeps)."""

    id_token: str | None
    access_token: str | None
    refresh_token: str | None


async def http_json(client: httpx.AsyncClient, url: str) -> Any:
    """GET ``url``'s JSON; ProviderUnavailable on a network error, a non-200 answer or a body that is not JSON."""
    try:
        answer = await client.get(url, headers={"accept": "application/json"})
    except httpx.HTTPError as exc:
        raise ProviderUnavailable(f"{url} cannot be reached ({type(exc).__name__})") from None
    if answer.status_code != 200:
        raise ProviderUnavailable(f"{url} answered {answer.status_code}")
    try:
        return answer.json()
    except ValueError:
        raise ProviderUnavailable(f"{url} did not answer JSON") from None


class TokenEndpointRefused(Exception):
    """The token endpoint refused a grant (``invalid_grant``: the code was used, the session ended…); ``error`` is
    the provider's error code, never a token."""

    def __init__(self, error: str) -> None:
        super().__init__(f"the provider refused the grant: {error}")
        self.error = error


class OidcClient:
    """One provider, for one client: its metadata (discovered once, on first use), its keys, its token endpoint.

    ``client_secret`` None: a public client (PKCE alone); otherwise the secret goes by HTTP Basic
    (``client_secret_basic``, which every provider must support)."""

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        client_secret: str | None,
        http: httpx.AsyncClient,
        jwks_min_refresh_s: float = JWKS_MIN_REFRESH_S,
    ) -> None:
        self.issuer = issuer
        self.client_id = client_id
        self._client_secret = client_secret
        self._http = http
        self._metadata: ProviderMetadata | None = None
        self._discovery = asyncio.Lock()
        self.keys = JwksCache(self._fetch_jwks, min_refresh_s=jwks_min_refresh_s)

    async def metadata(self) -> ProviderMetadata:
        if self._metadata is None:
            async with self._discovery:
                if self._metadata is None:
                    document = await http_json(self._http, discovery_url(self.issuer))
                    self._metadata = ProviderMetadata.from_document(document, self.issuer)
        return self._metadata

    async def _fetch_jwks(self) -> Any:
        return await http_json(self._http, (await self.metadata()).jwks_uri)

    async def authorization_url(
        self, *, redirect_uri: str, state: str, nonce: str, code_verifier: str, acr_values: str | None = None
    ) -> str:
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": "openid profile",
            "state": state,
            "nonce": nonce,
            "code_challenge": code_challenge(code_verifier),
            "code_challenge_method": "S256",
        }
        if acr_values:
            params["acr_values"] = acr_values
        return f"{(await self.metadata()).authorization_endpoint}?{urlencode(params)}"

    async def end_session_url(self, *, id_token_hint: str | None, post_logout_redirect_uri: str) -> str | None:
        """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0), or None when the provider has none."""
        endpoint = (await self.metadata()).end_session_endpoint
        if endpoint is None:
            return None
        params = {"client_id": self.client_id, "post_logout_redirect_uri": post_logout_redirect_uri}
        if id_token_hint:
            params["id_token_hint"] = id_token_hint
        return f"{endpoint}?{urlencode(params)}"

    async def _grant(self, form: dict[str, str]) -> TokenSet:
        headers: dict[str, str] = {"accept": "application/json"}
        if self._client_secret is None:
            form = {**form, "client_id": self.client_id}
        else:
            # RFC 6749 §2.3.1: the id and secret are form-encoded before they are joined for HTTP Basic.
            pair = f"{quote_plus(self.client_id)}:{quote_plus(self._client_secret)}"
            headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        try:
            endpoint = (await self.metadata()).token_endpoint
            answer = await self._http.post(endpoint, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"the token endpoint cannot be reached ({type(exc).__name__})") from None
        try:
            body = answer.json()
        except ValueError:
            raise ProviderUnavailable(f"the token endpoint answered {answer.status_code}, not JSON") from None
        if answer.status_code in (400, 401) and isinstance(body, dict) and isinstance(body.get("error"), str):
            raise TokenEndpointRefused(body["error"][:64])
        if answer.status_code != 200 or not isinstance(body, dict):
            raise ProviderUnavailable(f"the token endpoint answered {answer.status_code}")

        def text(name: str) -> str | None:
            value = body.get(name)
            return value if isinstance(value, str) else None

        return TokenSet(text("id_token"), text("access_token"), text("refresh_token"))

    async def exchange_code(self, *, code: str, code_verifier: str, redirect_uri: str) -> TokenSet:
        return await self._grant(
            {
                "grant_type": "authorization_code",
                "code": code,
                "code_verifier": code_verifier,
                "redirect_uri": redirect_uri,
            }
        )

    async def refresh(self, refresh_token: str) -> TokenSet:
        return await self._grant({"grant_type": "refresh_token", "refresh_token": refresh_token})
