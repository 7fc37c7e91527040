"""The demo realm (deploy/local/keycloak/wa-archive-realm.json) and what deploy/local/demo.env publishes about it
say the same; the tests' TOTP codes are RFC 6238's."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from devtools.devrun import demo_people, identity_provider_banner
from devtools.samples import REPO_ROOT, load_demo_env
from tests.helpers.keycloak import Pkce, totp, unverified_claims

pytestmark = pytest.mark.unit

DEMO = load_demo_env()
REALM: dict[str, Any] = json.loads((REPO_ROOT / "deploy/local/keycloak/wa-archive-realm.json").read_text())


def client(client_id: str) -> dict[str, Any]:
    return next(c for c in REALM["clients"] if c["clientId"] == client_id)


def credential(username: str, kind: str) -> dict[str, Any] | None:
    user = next(u for u in REALM["users"] if u["username"] == username)
    return next((c for c in user.get("credentials", []) if c["type"] == kind), None)


def test_demo_env_publishes_the_realms_passwords_and_totp_secrets() -> None:
    passwords = json.loads(DEMO["WA_KEYCLOAK_DEMO_PASSWORDS"])
    people = {u["username"] for u in REALM["users"] if "serviceAccountClientId" not in u}
    assert set(passwords) == people
    for username, password in passwords.items():
        assert credential(username, "password") == {"type": "password", "value": password, "temporary": False}
    secrets = json.loads(DEMO["WA_KEYCLOAK_DEMO_TOTP_SECRETS"])
    dpos = {u["username"] for u in REALM["users"] if "/dpo" in u.get("groups", [])}
    assert set(secrets) == dpos == {"dpo.alice", "dpo.bruno"}
    for username, secret in secrets.items():
        otp = credential(username, "otp")
        assert otp is not None
        # Keycloak keys the HMAC with the stored value's bytes; an authenticator app takes them in base32.
        assert base64.b32decode(secret).decode() == json.loads(otp["secretData"])["value"]


def test_demo_env_names_the_realms_clients_issuer_and_console_port() -> None:
    assert client("wa-archive-console")["secret"] == DEMO["WA_CONSOLE_OIDC__CLIENT_SECRET"]
    assert client(DEMO["WA_KEYCLOAK_API_CLIENT_ID"])["secret"] == DEMO["WA_KEYCLOAK_API_CLIENT_SECRET"]
    issuer = f"{DEMO['WA_KEYCLOAK_URL']}/realms/{REALM['realm']}"
    assert DEMO["WA_CONSOLE_OIDC__ISSUER"] == DEMO["WA_RETENTION_OIDC__ISSUER"] == issuer
    assert DEMO["WA_KEYCLOAK_URL"] == f"http://127.0.0.1:{DEMO['WA_KEYCLOAK_PORT']}"
    console = f"http://127.0.0.1:{DEMO['WA_CONSOLE_PORT']}"
    assert client("wa-archive-console")["redirectUris"] == [f"{console}/*"]
    assert client("wa-archive-console")["attributes"]["backchannel.logout.url"] == f"{console}/oidc/backchannel-logout"
    role_map = json.loads(DEMO["WA_CONSOLE_OIDC__ROLE_MAP"])
    assert set(role_map) == {r["name"] for r in REALM["roles"]["realm"]}
    assert DEMO["WA_CONSOLE_OIDC__STEP_UP_ACR"] in json.loads(REALM["attributes"]["acr.loa.map"])


@pytest.mark.parametrize(
    ("at", "code"),
    [
        pytest.param(59, "94287082", id="T=59"),
        pytest.param(1111111109, "07081804", id="T=1111111109"),
        pytest.param(1234567890, "89005924", id="T=1234567890"),
        pytest.param(20000000000, "65353130", id="T=20000000000"),
    ],
)
def test_totp_gives_rfc_6238s_sha1_codes(at: int, code: str) -> None:
    secret = base64.b32encode(b"12345678901234567890").decode()
    assert totp(secret, at, digits=8) == code
    assert totp(secret.rstrip("=").lower(), at, digits=6) == code[-6:]


def test_pkce_challenge_is_the_verifiers_s256() -> None:
    verifier, challenge = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert Pkce.challenge_of(verifier) == challenge  # RFC 7636, appendix B
    assert Pkce.new().verifier != Pkce.new().verifier


def test_unverified_claims_reads_a_jwt_payload_and_refuses_anything_else() -> None:
    payload = base64.urlsafe_b64encode(json.dumps({"acr": "mfa"}).encode()).rstrip(b"=").decode()
    assert unverified_claims(f"e30.{payload}.c2ln") == {"acr": "mfa"}
    with pytest.raises(ValueError, match="compact JWS"):
        unverified_claims("only.two")


def test_make_run_shows_each_demo_person_with_role_password_and_second_factor() -> None:
    people = {p.username: p for p in demo_people(DEMO)}
    assert {u: (p.role, p.name) for u, p in people.items()} == {
        "dpo.alice": ("dpo", "Alice Martin"),
        "dpo.bruno": ("dpo", "Bruno Lefebvre"),
        "reader.chloe": ("reader", "Chloé Durand"),
        "reader.driss": ("reader", "Driss Benali"),
    }
    banner = identity_provider_banner(DEMO)
    assert "http://127.0.0.1:8180/realms/wa-archive" in banner
    for person in people.values():
        line = next(line for line in banner.splitlines() if person.username in line)
        assert person.password in line
        assert (person.totp_secret is not None) == (person.role == "dpo")
        assert person.totp_secret is None or person.totp_secret in line
