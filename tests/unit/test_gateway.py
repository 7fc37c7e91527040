"""The send gateway's pure parts: which requests are archived, the headers that cross, a template's text as the
customer saw it, and the journal records of a send (the outcome's event id is the one an outbound report of the same
message gets)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.archiver.media import Egress, outbound_media_ref
from services.gateway.records import SendContext, attempt_event, outcome_event, outcome_of
from services.gateway.routing import PASS, SEND, UPLOAD, forwarded_headers, route, upload_refusal
from services.gateway.settings import GatewaySettings
from services.gateway.templates import choose_template, rendered_text, substitute
from services.ingest.outbound import outbound_event

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("method", "path", "kind", "number"),
    [
        pytest.param("POST", "/v21.0/1065/messages", SEND, "1065", id="a send"),
        pytest.param("POST", "/v21.0/1065/media", UPLOAD, "1065", id="an upload"),
        pytest.param("POST", "/v9/1065/messages", SEND, "1065", id="a version without minor"),
        pytest.param("GET", "/v21.0/1065/messages", PASS, None, id="not a POST"),
        pytest.param("POST", "/v21.0/1065/messages/", PASS, None, id="a trailing slash"),
        pytest.param("POST", "/21.0/1065/messages", PASS, None, id="no v"),
        pytest.param("POST", "/v21.0/10.65/messages", PASS, None, id="a dot in the number"),
        pytest.param("POST", "/v21.0/1065/message_templates", PASS, None, id="templates"),
        pytest.param("POST", "/v21.0/1065/register", PASS, None, id="register"),
        pytest.param("POST", "/1065/messages", PASS, None, id="no version"),
        pytest.param("DELETE", "/v21.0/1065/media", PASS, None, id="deleting media"),
    ],
)
def test_route(method: str, path: str, kind: str, number: str | None) -> None:
    where = route(method, path)
    assert where.kind == kind
    assert where.phone_number_id == number


@settings(max_examples=100)
@given(st.text(alphabet="/v0123456789.abcdemsgia_-", max_size=40))
def test_only_the_exact_shapes_are_archived(path: str) -> None:
    where = route("POST", path)
    if where.kind != PASS:
        assert path == f"/{where.version}/{where.phone_number_id}/{'messages' if where.kind == SEND else 'media'}"


def test_forwarded_headers_drop_those_of_one_hop() -> None:
    headers = [
        (b"authorization", b"Bearer T"),
        (b"connection", b"keep-alive, x-private"),
        (b"x-private", b"1"),
        (b"host", b"gateway"),
        (b"transfer-encoding", b"chunked"),
        (b"content-length", b"12"),
        (b"content-type", b"application/json"),
    ]
    assert forwarded_headers(headers) == [(b"authorization", b"Bearer T"), (b"content-type", b"application/json")]


FORM = b"multipart/form-data; boundary=----x"
MEDIA_LIMIT = 100 * 1024 * 1024 + 64 * 1024


@pytest.mark.parametrize(
    ("content_type", "length", "refusal"),
    [
        pytest.param(FORM, b"1024", None, id="a small form"),
        pytest.param(FORM, str(MEDIA_LIMIT).encode(), None, id="Meta's 100 MB and the form around it"),
        pytest.param(FORM, str(MEDIA_LIMIT + 1).encode(), f"an upload exceeds {MEDIA_LIMIT} bytes", id="one more"),
        pytest.param(FORM, None, None, id="chunked: counted as it streams"),
        pytest.param(FORM, b"12x", "Content-Length is not a number", id="a length that is no number"),
        pytest.param(b"Multipart/Form-Data; Boundary=abc", b"10", None, id="case does not matter"),
        pytest.param(b"multipart/form-data", b"10", "an upload is multipart/form-data with a boundary", id="none"),
        pytest.param(b"application/json", b"10", "an upload is multipart/form-data with a boundary", id="json"),
        pytest.param(None, b"10", "an upload is multipart/form-data with a boundary", id="no content type"),
    ],
)
def test_upload_refusal(content_type: bytes | None, length: bytes | None, refusal: str | None) -> None:
    assert upload_refusal(content_type, length, MEDIA_LIMIT) == refusal


TEMPLATE: dict[str, Any] = {
    "name": "order_refund",
    "language": "en_US",
    "components": [
        {"type": "HEADER", "format": "IMAGE"},
        {"type": "BODY", "text": "Hello {{1}}, your refund of {{2}} is on its way. {{3}}"},
        {"type": "FOOTER", "text": "Reply STOP"},
        {"type": "BUTTONS", "buttons": [{"type": "QUICK_REPLY", "text": "Thanks"}]},
    ],
}


@pytest.mark.parametrize(
    ("components", "expected"),
    [
        pytest.param(
            [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "€42"}]}],
            "Hello Ana, your refund of €42 is on its way. {{3}}\nReply STOP",
            id="positional, one missing: left as written",
        ),
        pytest.param(
            [
                {"type": "header", "parameters": [{"type": "image", "image": {"id": "1"}}]},
                {
                    "type": "BODY",
                    "parameters": [
                        {"type": "text", "text": "Ana"},
                        {"type": "currency", "currency": {"fallback_value": "$10", "code": "USD"}},
                        {"type": "date_time", "date_time": {"fallback_value": "May 1"}},
                    ],
                },
            ],
            "Hello Ana, your refund of $10 is on its way. May 1\nReply STOP",
            id="currency and date fall back to their text; an image header is no text",
        ),
        pytest.param(None, "Hello {{1}}, your refund of {{2}} is on its way. {{3}}\nReply STOP", id="no parameters"),
    ],
)
def test_rendered_text(components: Any, expected: str) -> None:
    assert rendered_text(TEMPLATE, {"name": "order_refund", "components": components}) == expected


def test_named_parameters() -> None:
    template = {"components": [{"type": "BODY", "text": "Hi {{first_name}}, {{ order }} ships"}]}
    send = {
        "components": [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "parameter_name": "order", "text": "#12"},
                    {"type": "text", "parameter_name": "first_name", "text": "Jo"},
                ],
            }
        ]
    }
    assert rendered_text(template, send) == "Hi Jo, #12 ships"


@settings(max_examples=100)
@given(st.lists(st.text(max_size=8), max_size=5))
def test_a_parameter_is_put_in_once_never_expanded_again(values: list[str]) -> None:
    placeholders = " ".join(f"{{{{{i + 1}}}}}" for i in range(len(values)))
    assert substitute(placeholders, values, {}) == " ".join(values)


def test_choose_template_by_language() -> None:
    found = [{"name": "a", "language": "fr"}, {"name": "a", "language": "en_US"}]
    assert choose_template(found, "en_US") == found[1]
    assert choose_template(found, "de") is None
    assert choose_template(found[:1], None) == found[0]
    assert choose_template({"not": "a list"}, "fr") is None


def context(request: Any) -> SendContext:
    return SendContext(
        send_id="5f0c",
        waba_id="1022",
        phone_number_id="1065",
        raw=orjson.dumps(request),
        request=request,
        received_at="2026-12-06T10:00:00.000Z",
    )


REQUEST = {"messaging_product": "whatsapp", "to": "+16505551234", "type": "text", "text": {"body": "hi"}}
ANSWER = {
    "messaging_product": "whatsapp",
    "contacts": [{"input": "+16505551234", "wa_id": "16505551234"}],
    "messages": [{"id": "wamid.HBg"}],
}


def test_the_outcome_of_a_send_is_the_outbound_report_of_it() -> None:
    event = outcome_event(context(REQUEST), outcome="sent", status=200, response=ANSWER)
    report = outbound_event(
        orjson.dumps({"phone_number_id": "1065", "waba_id": "1022", "request": REQUEST, "response": ANSWER}),
        received_at="2026-12-06T10:00:00.000Z",
    )
    assert event.event_id == report.event_id
    assert event.kind == report.kind == "outbound"
    assert event.message_id == "wamid.HBg"
    assert event.subject is not None
    assert event.subject.wa_id == "16505551234"
    assert event.key() == report.key()
    assert event.payload["gateway"] == {"send_id": "5f0c", "outcome": "sent", "http_status": 200}


def test_the_attempt_and_an_unanswered_outcome_are_the_sends_own() -> None:
    attempt = attempt_event(context(REQUEST))
    lost = outcome_event(context(REQUEST), outcome="unknown", status=None, response=None)
    assert attempt.kind == "send_attempt"
    assert attempt.key() == lost.key() == b"1065:16505551234"
    assert lost.message_id is None
    assert len({attempt.event_id, lost.event_id}) == 2
    assert "authorization" not in orjson.dumps(attempt.as_dict()).decode().lower()


@pytest.mark.parametrize(
    ("status", "response", "outcome"),
    [
        pytest.param(200, ANSWER, "sent", id="accepted"),
        pytest.param(200, {"messages": []}, "refused", id="2xx without a message id"),
        pytest.param(400, {"error": {"code": 131056}}, "refused", id="pair rate limit"),
        pytest.param(None, None, "unknown", id="no answer"),
    ],
)
def test_outcome_of(status: int | None, response: Any, outcome: str) -> None:
    assert outcome_of(status, response) == outcome


def test_a_group_send_has_no_person() -> None:
    event = attempt_event(context({"recipient_type": "group", "to": "G1", "type": "text"}))
    assert event.subject is None
    assert event.group_id == "G1"


@pytest.mark.parametrize(
    ("request_body", "message_id", "media_id"),
    [
        pytest.param({"type": "image", "image": {"id": "1013"}}, "wamid.A", "1013", id="an upload sent by id"),
        pytest.param({"type": "image", "image": {"id": "1013"}}, None, None, id="a send Meta refused"),
        pytest.param({"type": "document", "document": {"link": "https://x/y.pdf"}}, "wamid.A", "link", id="by link"),
        pytest.param({"type": "text", "text": {"body": "hi"}}, "wamid.A", None, id="no medium"),
    ],
)
def test_the_medium_of_an_outbound_send(
    request_body: dict[str, Any], message_id: str | None, media_id: str | None
) -> None:
    ref = outbound_media_ref(request_body["type"], {"request": request_body}, message_id)
    assert (ref.media_id if ref else None) == media_id


@pytest.mark.parametrize(
    ("url", "loopback_http", "refusal"),
    [
        pytest.param("https://8.8.8.8/invoice.pdf", False, None, id="a public address"),
        pytest.param("https://10.1.2.3/invoice.pdf", False, "url host not allowed", id="a private network"),
        pytest.param("https://169.254.169.254/latest/meta-data", False, "url host not allowed", id="metadata service"),
        pytest.param("https://100.64.0.1/x", False, "url host not allowed", id="shared address space"),
        pytest.param("https://[::1]/x", False, "url host not allowed", id="loopback v6"),
        pytest.param("https://127.0.0.1/x", False, "url host not allowed", id="loopback without the override"),
        pytest.param("http://127.0.0.1:8099/x", True, None, id="the local stand-in"),
        pytest.param("http://8.8.8.8/x", False, "url not https", id="plain http"),
        pytest.param("https://user:pw@8.8.8.8/x", False, "bad url", id="user info"),
        pytest.param("https://8.8.8.8:8443/x", False, "url host not allowed", id="another port"),
    ],
)
async def test_a_link_is_fetched_from_public_addresses_only(url: str, loopback_http: bool, refusal: str | None) -> None:
    assert await Egress(loopback_http=loopback_http).link_refusal(url) == refusal


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        pytest.param("https://graph.facebook.com", "https://graph.facebook.com", id="Meta's origin"),
        pytest.param("https://graph.facebook.com/", "https://graph.facebook.com", id="a trailing slash"),
        pytest.param("https://graph.example:8443", "https://graph.example:8443", id="a port"),
        pytest.param("https://graph.facebook.com/v21.0", None, id="a path would be dropped"),
        pytest.param("https://graph.facebook.com?x=1", None, id="a query"),
    ],
)
def test_the_upstream_is_an_origin(url: str, accepted: str | None) -> None:
    """Requests keep their own path (the client is given the origin only): a base path would be silently lost."""
    if accepted is None:
        with pytest.raises(ValidationError, match="must be an origin"):
            GatewaySettings(upstream_url=url)
    else:
        assert GatewaySettings(upstream_url=url).upstream_url == accepted
