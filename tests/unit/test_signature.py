"""X-Hub-Signature-256: HMAC-SHA256 of the raw body bytes, under any of several app secrets."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable

import pytest

from devtools.samples import payloads_dir
from services.core.events import parse_webhook
from services.ingest.signature import SignatureVerifier, app_id, sign

pytestmark = pytest.mark.unit

APP_A = b"app-a-secret"
APP_B = b"app-b-secret"
APP_C = b"app-c-secret-not-configured"
BODY = b'{"object":"whatsapp_business_account","entry":[]}'


def meta_encode(raw: bytes) -> bytes:
    """The body as Meta's senders write it: compact, ASCII only (``\\uXXXX``), ``/`` escaped as ``\\/``."""
    return json.dumps(json.loads(raw), ensure_ascii=True, separators=(",", ":")).replace("/", "\\/").encode("ascii")


def hex_of(secret: bytes, body: bytes = BODY) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(lambda: sign(BODY, APP_A), True, id="good, first app"),
        pytest.param(lambda: sign(BODY, APP_B), True, id="good, second app"),
        pytest.param(lambda: sign(BODY, APP_C), False, id="an app that is not configured"),
        pytest.param(lambda: sign(BODY + b" ", APP_A), False, id="signature of another body"),
        pytest.param(lambda: None, False, id="missing header"),
        pytest.param(lambda: "", False, id="empty header"),
        pytest.param(lambda: "sha256=", False, id="prefix only"),
        pytest.param(lambda: hex_of(APP_A), False, id="no prefix"),
        pytest.param(lambda: "sha1=" + hex_of(APP_A), False, id="sha1 prefix"),
        pytest.param(lambda: "SHA256=" + hex_of(APP_A), False, id="upper-case prefix"),
        pytest.param(lambda: "sha256=" + hex_of(APP_A).upper(), True, id="upper-case hex digits"),
        pytest.param(lambda: "sha256=" + hex_of(APP_A)[:-1], False, id="63 digits"),
        pytest.param(lambda: "sha256=" + hex_of(APP_A) + "0", False, id="65 digits"),
        pytest.param(lambda: "sha256=" + hex_of(APP_A) + " ", False, id="trailing space"),
        pytest.param(lambda: " sha256=" + hex_of(APP_A), False, id="leading space"),
        pytest.param(lambda: "sha256=" + hex_of(APP_A)[:62] + " 0", False, id="space inside the digits"),
        pytest.param(lambda: "sha256=" + "g" * 64, False, id="not hex"),
        pytest.param(lambda: "sha256=" + "٣" * 64, False, id="non-ASCII digits"),
        pytest.param(lambda: "sha256=" + "0" * 64, False, id="all zeros"),
    ],
)
def test_verify(header: Callable[[], str | None], expected: bool) -> None:
    verifier = SignatureVerifier([APP_A, APP_B])
    assert verifier.verify(BODY, header()) is expected


def test_sign_is_hmac_sha256_of_the_raw_body_in_lowercase_hex() -> None:
    assert sign(BODY, APP_A) == "sha256=" + hmac.new(APP_A, BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, APP_A) == sign(BODY, APP_A).lower()


def test_a_reserialised_body_is_rejected() -> None:
    raw = (payloads_dir() / "inbound_text.json").read_bytes()
    header = sign(raw, APP_A)
    verifier = SignatureVerifier([APP_A])
    assert verifier.verify(raw, header)
    for reserialised in (json.dumps(json.loads(raw)).encode(), meta_encode(raw)):
        assert reserialised != raw
        assert not verifier.verify(reserialised, header), "the check must run on the bytes received"


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        pytest.param("inbound_reaction", b'"emoji":"\\ud83d\\udc4d"', id="non-ASCII as \\uXXXX"),
        pytest.param("inbound_image", b'"url":"https:\\/\\/lookaside.fbsbx.com\\/', id="slash as \\/"),
    ],
)
def test_a_body_in_metas_escaping_is_verified_as_raw_bytes(name: str, escaped: bytes) -> None:
    original = (payloads_dir() / f"{name}.json").read_bytes()
    raw = meta_encode(original)
    assert raw.isascii()
    assert escaped in raw
    header = sign(raw, APP_B)
    verifier = SignatureVerifier([APP_A, APP_B])
    assert verifier.verify(raw, header)
    unescaped = json.dumps(json.loads(raw), ensure_ascii=False, separators=(",", ":")).encode()
    assert not verifier.verify(unescaped, header), "the same JSON, unescaped, is other bytes"
    (event,) = parse_webhook(raw, raw_sha256=hashlib.sha256(raw).hexdigest(), signature=header, received_at="t")
    assert event.payload == json.loads(original)["entry"][0]["changes"][0]["value"]["messages"][0]
    assert event.delivery.signature == header


@pytest.mark.parametrize("matching", [pytest.param(APP_A, id="first"), pytest.param(APP_C, id="last")])
def test_every_secret_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch, matching: bytes) -> None:
    calls: list[int] = []
    compare = hmac.compare_digest

    def counting_compare(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return compare(a, b)

    # The verifier looks hmac.compare_digest up at call time, so patching the module counts its comparisons.
    monkeypatch.setattr(hmac, "compare_digest", counting_compare)
    verifier = SignatureVerifier([APP_A, APP_B, APP_C])
    assert verifier.verify(BODY, sign(BODY, matching))
    assert len(calls) == 3


@pytest.mark.parametrize(
    "secrets",
    [
        pytest.param([], id="none"),
        pytest.param([b""], id="an empty secret"),
        pytest.param([APP_A, b""], id="one empty among others"),
        pytest.param(APP_A, id="a single bytes object instead of a sequence"),
        pytest.param(["text-secret"], id="a str secret"),
    ],
)
def test_a_verifier_needs_at_least_one_non_empty_secret(secrets: object) -> None:
    with pytest.raises(ValueError, match="secret"):
        SignatureVerifier(secrets)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("signed_with", "expected"),
    [
        pytest.param(APP_A, 0, id="the first app"),
        pytest.param(APP_B, 1, id="the second app"),
        pytest.param(APP_C, None, id="an app that is not configured"),
    ],
)
def test_verified_by_names_the_secret_that_matched(signed_with: bytes, expected: int | None) -> None:
    assert SignatureVerifier([APP_A, APP_B]).verified_by(BODY, sign(BODY, signed_with)) == expected


def test_an_app_id_names_a_secret_without_revealing_it() -> None:
    assert app_id(APP_A) == app_id(APP_A)
    assert app_id(APP_A) != app_id(APP_B)
    assert len(app_id(APP_A)) == 16
    assert int(app_id(APP_A), 16) >= 0
    assert APP_A.hex()[:16] not in app_id(APP_A)
