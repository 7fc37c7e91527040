"""What the media sweep keeps sealed to fetch a medium again (services/archiver/sealing.py MediaRetry): a medium by
id and one the business sent by ``link`` read back as they were written; a link that is not text is dropped."""

from __future__ import annotations

import orjson
import pytest

from services.archiver.media import MediaRef
from services.archiver.sealing import MediaRetry

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param(MediaRef("1234567890", "image/jpeg", "c2hh"), id="by media id"),
        pytest.param(MediaRef("link", None, None, link="https://files.example.com/invoice.pdf"), id="by link"),
    ],
)
def test_a_retry_reads_back_as_written(ref: MediaRef) -> None:
    retry = MediaRetry(ref=ref, timestamp=1_765_000_000, received_at="2026-12-07T01:00:00.000Z")
    assert MediaRetry.from_json(retry.to_json()) == retry


def test_an_entry_written_before_links_were_kept_reads_without_one() -> None:
    old = orjson.dumps({"media_id": "1234567890", "mime_type": None, "sha256": None})
    assert MediaRetry.from_json(old).ref.link is None
    odd = orjson.dumps({"media_id": "link", "link": ["not", "text"]})
    assert MediaRetry.from_json(odd).ref.link is None
