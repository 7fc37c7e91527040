"""Driving the local Keycloak (deploy/local/stack.sh part ``keycloak``, realm ``wa-archive``) as a browser, a
machine and an administrator would: the sign-in through Keycloak's own pages with plain HTTP, the code exchange,
client credentials, TOTP codes for the step-up, and the admin API for what a test changes in the directory.

Every function takes an ``httpx.AsyncClient``. For the sign-in make it with ``browser()``: one client is one
browser (a second ``login_code`` with it finds Keycloak's SSO session), and like a browser it sends Keycloak's
``Secure`` cookies back to 127.0.0.1 over plain HTTP (httpx alone would not, and Keycloak then answers "cookie not
found"). The helpers follow Keycloak's redirects themselves and stop at the redirect back to the application.

Typical use::

    kc = Keycloak.from_env(demo_env)
    pkce = Pkce.new()
    url = kc.authorization_url(client_id="wa-archive-console", redirect_uri=..., state=s, nonce=n, pkce=pkce)
    async with browser() as b:
        back = await login_code(b, url, username="reader.chloe", password=kc.password("reader.chloe"))
        tokens = await exchange_code(b, kc, client_id=..., client_secret=..., code=back.code,
                                     redirect_uri=..., pkce=pkce)
    unverified_claims(tokens["id_token"])["realm_access"]["roles"]  # ["archive-reader"]

The demo people are shared by everyone's tests on the one Keycloak: a test that changes a person (groups, logout)
makes its own with ``temporary_user`` instead of changing ``dpo.alice``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.cookiejar
import json
import secrets
import struct
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx

__all__ = [
    "CodeRedirect",
    "Keycloak",
    "KeycloakAdmin",
    "LoginRefused",
    "Pkce",
    "browser",
    "client_credentials_token",
    "exchange_code",
    "login_code",
    "temporary_user",
    "totp",
    "unverified_claims",
]


# ---------------------------------------------------------------------------------------------------- the server
@dataclass(frozen=True, kw_only=True)
class Keycloak:
    """Where the local Keycloak is and the demo secrets it was imported with (deploy/local/demo.env)."""

    base_url: str
    realm: str
    admin_user: str
    admin_password: str
    passwords: Mapping[str, str] = field(default_factory=dict)
    totp_secrets: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Keycloak:
        return cls(
            base_url=env["WA_KEYCLOAK_URL"].rstrip("/"),
            realm=env["WA_KEYCLOAK_REALM"],
            admin_user=env["WA_KEYCLOAK_ADMIN_USER"],
            admin_password=env["WA_KEYCLOAK_ADMIN_PASSWORD"],
            passwords=json.loads(env["WA_KEYCLOAK_DEMO_PASSWORDS"]),
            totp_secrets=json.loads(env["WA_KEYCLOAK_DEMO_TOTP_SECRETS"]),
        )

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{self.realm}"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    def password(self, username: str) -> str:
        """A demo person's password (KeyError for anyone else)."""
        return self.passwords[username]

    def authorization_url(
        self,
        *,
        client_id: str,
        redirect_uri: str,
        state: str,
        nonce: str,
        pkce: Pkce | None,
        scope: str = "openid",
        acr_values: str | None = None,
        claims: Mapping[str, Any] | None = None,
        prompt: str | None = None,
    ) -> str:
        """The authorization request of the code flow. ``pkce=None`` leaves the challenge out (Keycloak refuses
        that for the console's client); ``claims`` is sent as the OIDC ``claims`` parameter (for example
        ``{"id_token": {"acr": {"essential": True, "values": ["mfa"]}}}``)."""
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "nonce": nonce,
        }
        if pkce is not None:
            params |= {"code_challenge": pkce.challenge, "code_challenge_method": "S256"}
        if acr_values is not None:
            params["acr_values"] = acr_values
        if claims is not None:
            params["claims"] = json.dumps(claims, separators=(",", ":"))
        if prompt is not None:
            params["prompt"] = prompt
        return f"{self.issuer}/protocol/openid-connect/auth?{urlencode(params)}"


@dataclass(frozen=True, kw_only=True)
class Pkce:
    """A PKCE pair (RFC 7636, S256)."""

    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        verifier = secrets.token_urlsafe(48)
        return cls(verifier=verifier, challenge=cls.challenge_of(verifier))

    @staticmethod
    def challenge_of(verifier: str) -> str:
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# ---------------------------------------------------------------------------------------------------- tokens
def totp(secret: str, at: float | None = None, *, period: int = 30, digits: int = 6) -> str:
    """The RFC 6238 code (HMAC-SHA1) of a base32 ``secret`` at time ``at`` (now by default), as an authenticator
    app shows it. The demo realm's TOTP policy is the default one: 6 digits, 30 s, SHA-1."""
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // period)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, NOT verified: for tests that read what Keycloak issued over a connection they trust.
    Code that accepts tokens verifies them (signature, issuer, audience, expiry)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    claims = json.loads(base64.urlsafe_b64decode(payload))
    if not isinstance(claims, dict):
        raise ValueError("the JWT's payload is not a JSON object")
    return claims


async def exchange_code(
    http: httpx.AsyncClient,
    kc: Keycloak,
    *,
    client_id: str,
    client_secret: str,
    code: str,
    redirect_uri: str,
    pkce: Pkce | None,
) -> dict[str, Any]:
    """The token response for an authorization code (``id_token``, ``access_token``, ``refresh_token``…).
    Raises ``httpx.HTTPStatusError`` when Keycloak refuses the exchange (its body says why)."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if pkce is not None:
        data["code_verifier"] = pkce.verifier
    response = await http.post(kc.token_endpoint, data=data, auth=(client_id, client_secret))
    _raise_for_status(response)
    return dict(response.json())


async def client_credentials_token(
    http: httpx.AsyncClient, kc: Keycloak, *, client_id: str, client_secret: str
) -> dict[str, Any]:
    """The token response of the client credentials grant (``access_token``, ``expires_in``…): what automation
    sends to the admin API. Raises ``httpx.HTTPStatusError`` when Keycloak refuses (a client without a service
    account answers 400 ``unauthorized_client``)."""
    response = await http.post(
        kc.token_endpoint, data={"grant_type": "client_credentials"}, auth=(client_id, client_secret)
    )
    _raise_for_status(response)
    return dict(response.json())


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_error:
        raise httpx.HTTPStatusError(
            f"{response.request.method} {response.request.url.path} answered {response.status_code}: "
            f"{response.text[:300]}",
            request=response.request,
            response=response,
        )


# ---------------------------------------------------------------------------------------------------- the sign-in
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class _LoopbackIsSecure(http.cookiejar.DefaultCookiePolicy):
    """Browsers treat http://127.0.0.1 as a secure context and send it ``Secure`` cookies; so does this policy."""

    def return_ok_secure(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        host = urlsplit(request.get_full_url()).hostname or ""
        return not cookie.secure or request.type == "https" or host in LOOPBACK_HOSTS


def browser(timeout: float = 30) -> httpx.AsyncClient:
    """A client that keeps cookies as a browser does on 127.0.0.1 (``Secure`` ones included) and does not follow
    redirects by itself. Close it (``async with``) when done."""
    client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
    jar = client.cookies.jar
    jar.set_policy(_LoopbackIsSecure())

    async def cookie_header(request: httpx.Request) -> None:
        # httpx copies the jar (with the default policy) into each request; the header is made again here from
        # the client's own jar and its policy.
        compat = urllib.request.Request(str(request.url))  # noqa: S310 (nothing is opened: it only carries the URL)
        jar.add_cookie_header(compat)
        header = compat.unredirected_hdrs.get("Cookie")
        if header:
            request.headers["Cookie"] = header

    client.event_hooks["request"] = [cookie_header]
    return client


class LoginRefused(AssertionError):
    """Keycloak answered a page the sign-in cannot go on from (a wrong password, an expired page, an error)."""


@dataclass(frozen=True, kw_only=True)
class CodeRedirect:
    """Where Keycloak sent the browser back to the application, and which of its pages were filled on the way:
    ``pages`` is a list of ``"password"`` and ``"otp"`` (empty when the SSO session sufficed)."""

    location: str
    pages: list[str]

    @property
    def params(self) -> dict[str, str]:
        return {key: values[0] for key, values in parse_qs(urlsplit(self.location).query).items()}

    @property
    def code(self) -> str:
        """The authorization code; a ``LoginRefused`` when Keycloak sent an error back instead."""
        params = self.params
        if "code" not in params:
            raise LoginRefused(f"no code in the redirect: {params.get('error')}: {params.get('error_description')}")
        return params["code"]


async def login_code(
    http: httpx.AsyncClient,
    authorization_url: str,
    *,
    username: str,
    password: str,
    totp_secret: str | None = None,
    max_steps: int = 12,
) -> CodeRedirect:
    """Signs in through Keycloak's own login pages as a person would: GET ``authorization_url`` (built by
    ``Keycloak.authorization_url`` or by the application under test), fill the username/password form and, when
    Keycloak asks (step-up, acr mfa), the OTP form with ``totp(totp_secret)``; follow Keycloak's redirects and stop
    at the first one that leaves Keycloak (the ``redirect_uri``), without following it.

    Raises ``LoginRefused`` when Keycloak shows its form again with an error (wrong password, wrong code), asks for
    an OTP without a ``totp_secret``, or shows any other page."""
    keycloak_origin = _origin(authorization_url)
    pages: list[str] = []
    response = await http.get(authorization_url, follow_redirects=False)
    for _ in range(max_steps):
        if response.is_redirect:
            location = urljoin(str(response.url), response.headers["location"])
            if _origin(location) != keycloak_origin:
                return CodeRedirect(location=location, pages=pages)
            response = await http.get(location, follow_redirects=False)
            continue
        if response.status_code != 200:
            raise LoginRefused(f"Keycloak answered {response.status_code}: {_page_message(response.text)}")
        forms = _forms(response.text)
        login = next((f for f in forms if "password" in f.fields), None)
        otp = next((f for f in forms if "otp" in f.fields), None)
        if login is not None:
            if "password" in pages:
                raise LoginRefused(f"the password was refused: {_page_message(response.text)}")
            pages.append("password")
            data = login.fields | {"username": username, "password": password}
            response = await http.post(urljoin(str(response.url), login.action), data=data, follow_redirects=False)
        elif otp is not None:
            if totp_secret is None:
                raise LoginRefused("Keycloak asks for an OTP (step-up) and no totp_secret was given")
            if "otp" in pages:
                raise LoginRefused(f"the OTP was refused: {_page_message(response.text)}")
            pages.append("otp")
            data = otp.fields | {"otp": totp(totp_secret)}
            response = await http.post(urljoin(str(response.url), otp.action), data=data, follow_redirects=False)
        else:
            raise LoginRefused(f"an unexpected Keycloak page: {_page_message(response.text)}")
    raise LoginRefused(f"no redirect back to the application after {max_steps} steps")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class _Form:
    action: str
    fields: dict[str, str]


class _FormParser(HTMLParser):
    """The forms of a page with their action and their named inputs (hidden ones keep their value)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self.text: list[str] = []
        self._in_form = False
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(_Form(action=values.get("action", ""), fields={}))
            self._in_form = True
        elif tag == "input" and self._in_form and values.get("name"):
            if values.get("type") not in ("submit", "button", "checkbox"):
                self.forms[-1].fields[values["name"]] = values.get("value", "")
        elif tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.text.append(data.strip())


def _forms(html: str) -> list[_Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def _page_message(html: str) -> str:
    """The visible text of a Keycloak page, shortened: enough to tell a wrong password from an expired page."""
    parser = _FormParser()
    parser.feed(html)
    return " | ".join(parser.text)[:400]


# ---------------------------------------------------------------------------------------------------- admin API
class KeycloakAdmin:
    """Keycloak's admin REST API on the demo realm, as the master realm's administrator (``admin-cli``): for the
    tests that change the directory (group memberships, sessions, temporary people). A new admin token is taken
    when the last one is within 10 s of its expiry."""

    def __init__(self, http: httpx.AsyncClient, kc: Keycloak) -> None:
        self._http = http
        self._kc = kc
        self._token = ""
        self._expires = 0.0

    async def _headers(self) -> dict[str, str]:
        if time.monotonic() > self._expires - 10:
            response = await self._http.post(
                f"{self._kc.base_url}/realms/master/protocol/openid-connect/token",
                data={
                    "grant_type": "password",
                    "client_id": "admin-cli",
                    "username": self._kc.admin_user,
                    "password": self._kc.admin_password,
                },
            )
            _raise_for_status(response)
            body = response.json()
            self._token = body["access_token"]
            self._expires = time.monotonic() + float(body["expires_in"])
        return {"Authorization": f"Bearer {self._token}"}

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """``path`` is relative to the realm's admin root (``/users``, ``/groups/ID``…). Raises
        ``httpx.HTTPStatusError`` on an error answer."""
        url = f"{self._kc.base_url}/admin/realms/{self._kc.realm}{path}"
        response = await self._http.request(method, url, headers=await self._headers(), **kwargs)
        _raise_for_status(response)
        return response

    async def user_id(self, username: str) -> str:
        found = (await self.request("GET", "/users", params={"username": username, "exact": "true"})).json()
        if not found:
            raise LookupError(f"no user {username!r} in realm {self._kc.realm}")
        return str(found[0]["id"])

    async def group_id(self, group: str) -> str:
        found = (await self.request("GET", "/groups", params={"search": group, "exact": "true"})).json()
        for entry in found:
            if entry["name"] == group:
                return str(entry["id"])
        raise LookupError(f"no group {group!r} in realm {self._kc.realm}")

    async def groups_of(self, username: str) -> list[str]:
        user = await self.user_id(username)
        return sorted(g["name"] for g in (await self.request("GET", f"/users/{user}/groups")).json())

    async def remove_from_group(self, username: str, group: str) -> None:
        """Takes ``username`` out of ``group`` (and so of the group's realm roles): the next token Keycloak issues
        for them, including on refresh, lacks those roles."""
        user, group_id = await self.user_id(username), await self.group_id(group)
        await self.request("DELETE", f"/users/{user}/groups/{group_id}")

    async def add_to_group(self, username: str, group: str) -> None:
        user, group_id = await self.user_id(username), await self.group_id(group)
        await self.request("PUT", f"/users/{user}/groups/{group_id}")

    async def logout_user(self, username: str) -> None:
        """Ends every session of ``username``: Keycloak sends a back-channel logout token to each client that has
        a back-channel logout URL and a session of theirs (the console: /oidc/backchannel-logout)."""
        await self.request("POST", f"/users/{await self.user_id(username)}/logout")

    async def create_user(
        self, *, username: str, password: str, groups: Sequence[str], totp_secret: str | None = None
    ) -> None:
        """A person with a password, in ``groups``, and (``totp_secret``, base32) a TOTP authenticator. Through a
        partial import, the only admin call that takes an OTP credential with a known secret."""
        raw_secret = base64.b32decode(totp_secret + "=" * (-len(totp_secret) % 8)).decode() if totp_secret else ""
        credentials: list[dict[str, Any]] = [{"type": "password", "value": password, "temporary": False}]
        if totp_secret:
            credentials.append(
                {
                    "type": "otp",
                    "userLabel": "test authenticator",
                    # Keycloak keys the HMAC with the secret's own bytes; apps receive them base32-encoded.
                    "secretData": json.dumps({"value": raw_secret}),
                    "credentialData": json.dumps(
                        {"subType": "totp", "digits": 6, "counter": 0, "period": 30, "algorithm": "HmacSHA1"}
                    ),
                }
            )
        first, _, last = username.partition(".")
        user = {
            "username": username,
            "enabled": True,
            "firstName": first.capitalize() or username,
            "lastName": last.capitalize() or "Test",
            "email": f"{username}@example.org",
            "emailVerified": True,
            "groups": [f"/{g}" for g in groups],
            "credentials": credentials,
        }
        await self.request("POST", "/partialImport", json={"ifResourceExists": "FAIL", "users": [user]})

    async def delete_user(self, username: str) -> None:
        await self.request("DELETE", f"/users/{await self.user_id(username)}")


@dataclass(frozen=True, kw_only=True)
class TemporaryUser:
    username: str
    password: str
    totp_secret: str | None


@contextlib.asynccontextmanager
async def temporary_user(
    admin: KeycloakAdmin, *, groups: Sequence[str], with_totp: bool = False, prefix: str = "test"
) -> AsyncIterator[TemporaryUser]:
    """A person of one's own for a test that changes them (groups, sessions), deleted afterwards: the shared demo
    people stay as the realm file says for everyone else's tests. The username is ``PREFIX.<random>``."""
    username = f"{prefix}.{uuid.uuid4().hex[:10]}"
    password = secrets.token_urlsafe(16)
    # 20 random letters, as Keycloak makes them: the secret's bytes are what the HMAC is keyed with.
    raw = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(20))
    secret = base64.b32encode(raw.encode()).decode() if with_totp else None
    await admin.create_user(username=username, password=password, groups=groups, totp_secret=secret)
    try:
        yield TemporaryUser(username=username, password=password, totp_secret=secret)
    finally:
        await admin.delete_user(username)
