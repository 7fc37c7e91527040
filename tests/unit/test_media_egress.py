"""Egress of the media fetcher: which URLs the bearer token may go to, and which media ids may enter a path."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.archiver.media import MEDIA_ID, Egress, host_allowed
from services.archiver.settings import GraphSettings

META = Egress()
LOCAL = Egress(download_hosts=("127.0.0.1",), loopback_http=True)


@pytest.mark.parametrize(
    ("egress", "url", "expected"),
    [
        pytest.param(META, "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1&ext=2", None, id="meta"),
        pytest.param(META, "https://scontent.xx.fbcdn.net/v/t61/1.jpg?oh=abc", None, id="cdn subdomain"),
        pytest.param(META, "https://mmg.whatsapp.net/d/f/A.enc", None, id="whatsapp cdn"),
        pytest.param(META, "https://LOOKASIDE.FBSBX.COM/x", None, id="host case"),
        pytest.param(META, "http://lookaside.fbsbx.com/x", "url not https", id="http refused"),
        pytest.param(META, "ftp://lookaside.fbsbx.com/x", "url not https", id="other scheme"),
        pytest.param(META, "https://fbcdn.net/x", "url host not allowed", id="wildcard is not the apex"),
        pytest.param(META, "https://evilfbcdn.net/x", "url host not allowed", id="suffix without dot"),
        pytest.param(META, "https://lookaside.fbsbx.com.evil.example/x", "url host not allowed", id="prefix trick"),
        pytest.param(META, "https://lookaside.fbsbx.com@evil.example/x", "bad url", id="user info"),
        pytest.param(META, "https://lookaside.fbsbx.com:8443/x", "url host not allowed", id="other port"),
        pytest.param(META, "https://169.254.169.254/latest/meta-data", "url host not allowed", id="metadata ip"),
        pytest.param(META, "http://127.0.0.1:8099/download/x", "url not https", id="loopback without override"),
        pytest.param(META, "https://exa mple.com/x", "url host not allowed", id="space"),
        pytest.param(META, "https:///x", "bad url", id="no host"),
        pytest.param(META, "not a url", "bad url", id="relative"),
        pytest.param(LOCAL, "http://127.0.0.1:8099/download/x", None, id="stand-in with override"),
        pytest.param(LOCAL, "http://localhost:8099/download/x", "url host not allowed", id="loopback off the list"),
        pytest.param(LOCAL, "http://10.0.0.7/download/x", "url not https", id="override is loopback only"),
    ],
)
def test_egress_refusal(egress: Egress, url: str, expected: str | None) -> None:
    assert egress.refusal(url) == expected


@given(st.text(max_size=200))
def test_egress_refusal_never_raises(url: str) -> None:
    assert META.refusal(url) in {None, "url not https", "url host not allowed", "bad url"}


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("a.fbcdn.net", True), ("a.b.fbcdn.net", True), ("fbcdn.net", False), ("xfbcdn.net", False), ("", False)],
)
def test_host_allowed(host: str, allowed: bool) -> None:
    assert host_allowed(host, ("*.fbcdn.net",)) is allowed


@pytest.mark.parametrize(
    ("media_id", "valid"),
    [
        ("1908647269898587", True),
        ("photo-1", True),
        ("a_B-9", True),
        ("", False),
        ("..", False),
        ("1/../me", False),
        ("1?fields=x", False),
        ("1#x", False),
        ("1%2F2", False),
        ("1 2", False),
        ("1\n", False),
        ("é", False),
        ("1" * 129, False),
    ],
)
def test_media_id(media_id: str, valid: bool) -> None:
    assert (MEDIA_ID.fullmatch(media_id) is not None) is valid


@given(st.text(min_size=1, max_size=50))
def test_a_valid_media_id_stays_one_path_segment(media_id: str) -> None:
    if MEDIA_ID.fullmatch(media_id):
        assert set(media_id) <= set(string.ascii_letters + string.digits + "_-")


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        pytest.param({"base_url": "http://graph.facebook.com/v21.0"}, r"refused \(url not https\)", id="http base"),
        pytest.param(
            {"base_url": "http://127.0.0.1:8099"}, r"refused \(url not https\)", id="loopback without override"
        ),
        pytest.param({"download_hosts": ("*.",)}, "download host", id="empty wildcard"),
        pytest.param({"download_hosts": ("Evil.Example",)}, "download host", id="upper case"),
        pytest.param({"download_hosts": ("a/b",)}, "download host", id="path"),
    ],
)
def test_graph_settings_refuse(overrides: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        GraphSettings.model_validate(overrides)


def test_graph_settings_defaults_and_local_override() -> None:
    assert GraphSettings().egress() == META
    local = GraphSettings(base_url="http://127.0.0.1:8099", loopback_http=True, download_hosts=("127.0.0.1",))
    assert local.egress() == LOCAL
