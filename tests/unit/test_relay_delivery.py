"""The relay's pure decisions (services/relay/delivery.py): which records a destination gets (the field filter over
the raw bytes), the signatures it gets them with, what an answer means, and the backoff schedule within a budget."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.core.journal import EVENT_FORMAT, FORMAT_HEADER, SIGNATURE_HEADER, WEBHOOK_FORMAT
from services.ingest.signature import SignatureVerifier, sign
from services.relay.delivery import (
    HUB_SIGNATURE,
    META_SIGNATURE,
    RECORD_POSITION,
    Backoff,
    Selection,
    delivery_headers,
    judge_status,
    select,
    webhook_fields,
)
from services.relay.settings import DestinationSettings, RelaySettings

pytestmark = pytest.mark.unit

META = b"meta-app-secret"
OWN = b"the-inbox-app-secret"


def webhook(*fields: str) -> bytes:
    changes = [{"field": field, "value": {"text": "caf\\u00e9"}} for field in fields]
    return orjson.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": changes}]})


def headers_of(raw: bytes, *, form: bytes = WEBHOOK_FORMAT, signed: bool = True) -> list[tuple[str, bytes]]:
    headers = [(FORMAT_HEADER, form)]
    if signed:
        headers.append((SIGNATURE_HEADER, sign(raw, META).encode()))
    return headers


@pytest.mark.parametrize(
    ("raw", "headers", "wanted", "expected"),
    [
        pytest.param(webhook("messages"), None, ("messages",), Selection.SKIP, id="no format header: event/1"),
        pytest.param(webhook("messages"), EVENT_FORMAT, (), Selection.SKIP, id="an event envelope, all fields"),
        pytest.param(webhook("messages"), WEBHOOK_FORMAT, (), Selection.DELIVER, id="every field wanted"),
        pytest.param(webhook("messages"), WEBHOOK_FORMAT, ("messages",), Selection.DELIVER, id="wanted field"),
        pytest.param(
            webhook("message_template_status_update"), WEBHOOK_FORMAT, ("messages",), Selection.SKIP, id="other field"
        ),
        pytest.param(
            webhook("account_update", "messages"), WEBHOOK_FORMAT, ("messages",), Selection.DELIVER, id="one of two"
        ),
        pytest.param(b"{not json", WEBHOOK_FORMAT, ("messages",), Selection.UNREADABLE, id="unreadable, filtered"),
        pytest.param(b"{not json", WEBHOOK_FORMAT, (), Selection.DELIVER, id="unreadable, unfiltered: bytes as-is"),
        pytest.param(b'{"entry": {}}', WEBHOOK_FORMAT, ("messages",), Selection.UNREADABLE, id="entry not a list"),
        pytest.param(b'{"entry": [1, {"changes": [2]}]}', WEBHOOK_FORMAT, ("messages",), Selection.SKIP, id="odd"),
    ],
)
def test_select(raw: bytes, headers: bytes | None, wanted: tuple[str, ...], expected: Selection) -> None:
    record_headers = None if headers is None else [(FORMAT_HEADER, headers)]
    assert select(raw, record_headers, frozenset(wanted)) is expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["messages", "statuses", "account_update", "history", "x"]), min_size=1, max_size=4))
def test_webhook_fields_are_the_changes_fields(fields: list[str]) -> None:
    assert webhook_fields(webhook(*fields)) == frozenset(fields)


def test_without_own_secret_metas_signature_is_passed_on_and_verifies_with_metas_secret() -> None:
    raw = webhook("messages")
    headers = delivery_headers(raw, headers_of(raw), secret=None, position="t/0/7")
    assert headers is not None
    assert headers[HUB_SIGNATURE] == sign(raw, META)
    assert headers[RECORD_POSITION] == "t/0/7"
    assert META_SIGNATURE not in headers
    assert SignatureVerifier([META]).verify(raw, headers[HUB_SIGNATURE])


def test_with_own_secret_the_hub_header_is_its_signature_and_metas_moves_aside() -> None:
    raw = webhook("messages")
    headers = delivery_headers(raw, headers_of(raw), secret=OWN, position="t/1/0")
    assert headers is not None
    assert SignatureVerifier([OWN]).verify(raw, headers[HUB_SIGNATURE])
    assert not SignatureVerifier([META]).verify(raw, headers[HUB_SIGNATURE])
    assert headers[META_SIGNATURE] == sign(raw, META)


def test_unsigned_record_without_own_secret_has_nothing_to_verify() -> None:
    raw = webhook("messages")
    assert delivery_headers(raw, headers_of(raw, signed=False), secret=None, position="t/0/0") is None
    own = delivery_headers(raw, headers_of(raw, signed=False), secret=OWN, position="t/0/0")
    assert own is not None
    assert META_SIGNATURE not in own


@pytest.mark.parametrize(
    ("status", "delivered", "retry", "failure"),
    [
        pytest.param(200, True, False, None, id="200"),
        pytest.param(204, True, False, None, id="204"),
        pytest.param(301, False, False, "status_3xx", id="redirect never followed"),
        pytest.param(400, False, False, "status_4xx", id="400 parked"),
        pytest.param(401, False, False, "status_4xx", id="401 parked (wrong secret)"),
        pytest.param(404, False, False, "status_4xx", id="404 parked"),
        pytest.param(408, False, True, "status_408", id="408 retried"),
        pytest.param(429, False, True, "status_429", id="429 retried"),
        pytest.param(500, False, True, "status_5xx", id="500 retried"),
        pytest.param(503, False, True, "status_5xx", id="503 retried"),
    ],
)
def test_judge_status(status: int, delivered: bool, retry: bool, failure: str | None) -> None:
    answer = judge_status(status)
    assert (answer.delivered, answer.retry, answer.failure) == (delivered, retry, failure)


BACKOFF = Backoff(initial_s=0.5, max_s=8.0, jitter=0.2, budget_s=20.0)


@pytest.mark.parametrize(
    ("retry", "draw", "expected"),
    [
        pytest.param(1, 0.0, 0.5, id="first retry, no jitter drawn"),
        pytest.param(2, 0.0, 1.0, id="doubles"),
        pytest.param(5, 0.0, 8.0, id="capped"),
        pytest.param(60, 0.0, 8.0, id="capped far out"),
        pytest.param(1, 0.5, 0.45, id="jitter takes off up to a fifth"),
    ],
)
def test_backoff_delay(retry: int, draw: float, expected: float) -> None:
    assert BACKOFF.delay(retry, draw) == pytest.approx(expected)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=200), st.floats(min_value=0, max_value=0.999999))
def test_backoff_delay_stays_within_jitter_of_the_capped_schedule(retry: int, draw: float) -> None:
    capped = min(8.0, 0.5 * 2 ** (retry - 1))
    assert 0.8 * capped - 1e-9 <= BACKOFF.delay(retry, draw) <= capped


def test_the_budget_bounds_the_waits_of_one_record() -> None:
    elapsed, retry = 0.0, 0
    while (wait := BACKOFF.next_wait(retry + 1, 0.0, elapsed)) is not None:
        retry += 1
        elapsed += wait
    # 0.5 + 1 + 2 + 4 + 8 = 15.5; one more 8 s wait would end at 23.5 > 20.
    assert (retry, elapsed) == (5, 15.5)
    assert Backoff(initial_s=0.1, max_s=1, jitter=0, budget_s=0).next_wait(1, 0.0, 0.0) is None


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=0, max_s=1, jitter=0, budget_s=1)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(initial_s=1, max_s=1, jitter=1, budget_s=1)


def destination(**changes: object) -> dict[str, object]:
    return {"name": "inbox", "url": "https://inbox.example.com/webhooks", **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"name": "In Box"}, "destination name", id="name not a label"),
        pytest.param({"url": "http://inbox.example.com/"}, "plain http is refused", id="plain http"),
        pytest.param({"url": "ftp://inbox.example.com/"}, "absolute https URL", id="not http"),
        pytest.param({"retry_initial_s": 5, "retry_max_s": 1}, "retry_max_s", id="backoff upside down"),
    ],
)
def test_destination_settings_refuse(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DestinationSettings.model_validate(destination(**changes))


def test_destination_settings_accept_loopback_http_and_allowed_plain_http() -> None:
    assert DestinationSettings.model_validate(destination(url="http://127.0.0.1:8087/in")).topic_for_parking() == (
        "wa-relay-inbox-parked"
    )
    DestinationSettings.model_validate(destination(url="http://chatwoot.crm.svc/in", allow_plain_http=True))


def test_relay_settings_merge_secrets_by_name_and_refuse_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WA_RELAY_DESTINATIONS", orjson.dumps([destination()]).decode())
    monkeypatch.setenv("WA_RELAY_DESTINATION_SECRETS", '{"inbox": "s3cret"}')
    settings = RelaySettings()
    secret = settings.destinations[0].secret
    assert secret is not None
    assert secret.get_secret_value() == "s3cret"
    assert settings.group_id(settings.destinations[0]) == "wa-relay-inbox"
    monkeypatch.setenv("WA_RELAY_DESTINATION_SECRETS", '{"crm": "s3cret"}')
    with pytest.raises(ValidationError, match="names no destination: crm"):
        RelaySettings()
    monkeypatch.setenv("WA_RELAY_DESTINATIONS", orjson.dumps([destination(), destination()]).decode())
    monkeypatch.delenv("WA_RELAY_DESTINATION_SECRETS")
    with pytest.raises(ValidationError, match="unique"):
        RelaySettings()
