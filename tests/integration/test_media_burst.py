"""Issue #22: eight 100 MB documents in one POST are archived by an archiver process within its memory bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.media_burst import run_burst

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

PEAK_RSS_TARGET_MB = 300


async def test_a_burst_of_large_documents_is_archived_byte_exact_within_bounded_memory(
    demo_env: dict[str, str], tmp_path: Path
) -> None:
    outcome = await run_burst(demo_env, documents=8, document_bytes=100_000_000, log=tmp_path / "archiver.log")
    print(f"media burst: {outcome}")
    assert outcome.failures == {}
    assert (outcome.archived, outcome.byte_exact) == (8, 8)
    assert outcome.archiver_alive
    assert 0 < outcome.archiver_peak_rss_mb <= PEAK_RSS_TARGET_MB, (tmp_path / "archiver.log").read_text()[-3000:]
