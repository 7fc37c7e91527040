"""X-Hub-Signature-256 over the raw bytes, several app secrets, constant-time."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from services.ingest.replay import meta_encode
from services.ingest.signature import SignatureVerifier, sign
from tests.support import payloads_dir

pytestmark = pytest.mark.unit

BODY = (payloads_dir() / "inbound_text.json").read_bytes()
APP_A, APP_B = b"secret-of-app-a", b"secret-of-app-b"
VERIFIER = SignatureVerifier([APP_A, APP_B])


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(sign(BODY, APP_A), True, id="good, first app"),
        pytest.param(sign(BODY, APP_B), True, id="good, second app"),
        pytest.param(sign(BODY, b"a third app"), False, id="another app's secret"),
        pytest.param(None, False, id="missing"),
        pytest.param("", False, id="empty"),
        pytest.param("sha1=" + hmac.new(APP_A, BODY, hashlib.sha1).hexdigest(), False, id="wrong prefix"),
        pytest.param(sign(BODY, APP_A).upper().replace("SHA256=", "sha256="), True, id="uppercase hex"),
        pytest.param(sign(BODY, APP_A)[:-1], False, id="truncated"),
        pytest.param("sha256=" + "z" * 64, False, id="not hex"),
        pytest.param(sign(BODY + b" ", APP_A), False, id="signature of other bytes"),
    ],
)
def test_verify(header: str | None, expected: bool) -> None:
    assert VERIFIER.verify(BODY, header) is expected


def test_a_reserialised_body_is_rejected() -> None:
    reserialised = json.dumps(json.loads(BODY)).encode()
    assert reserialised != BODY
    assert not VERIFIER.verify(reserialised, sign(BODY, APP_A))


def test_metas_escaping_is_signed_as_raw_bytes() -> None:
    raw = meta_encode((payloads_dir() / "inbound_text_ctwa_referral.json").read_bytes())
    assert b"\\/" in raw  # "/" escaped the way Meta does
    assert all(byte < 128 for byte in raw)
    assert VERIFIER.verify(raw, sign(raw, APP_B))
    assert not VERIFIER.verify(raw.replace(b"\\/", b"/"), sign(raw, APP_B))


def test_non_ascii_escaping_matters() -> None:
    unicode_body = '{"text":"caf\u00e9 \u2615"}'.encode()
    escaped = meta_encode(unicode_body)
    assert b"\\u00e9" in escaped
    assert not VERIFIER.verify(unicode_body, sign(escaped, APP_A))


def test_at_least_one_secret_is_required() -> None:
    with pytest.raises(ValueError, match="secret"):
        SignatureVerifier([])
    with pytest.raises(ValueError, match="secret"):
        SignatureVerifier([b""])
