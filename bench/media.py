"""Media burst (issue #22): eight 100 MB documents in one webhook POST, signed and sent to an ingest process, served
as streams by the Graph API stand-in and archived by one archiver process with the demo configuration (a 64 MiB
media budget). Prints the archiver's peak RSS (target ≤ 300 MB), the time to archive them all, and that every one
reads back byte for byte.

    python -m bench.media [--documents 8] [--megabytes 100]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from bench.common import demo_env, ensure_stack, write_result
from devtools.media_burst import run_burst


async def run(documents: int, megabytes: int) -> dict[str, Any]:
    outcome = await run_burst(
        demo_env(),
        documents=documents,
        document_bytes=megabytes * 1_000_000,
        log=Path("/tmp") / "bench-media-archiver.log",
    )
    figures = dataclasses.asdict(outcome)
    figures["archive_mb_per_s"] = round(documents * megabytes / max(outcome.seconds_to_archive, 0.001), 1)
    figures["targets"] = {"archiver_peak_rss_mb": 300}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=8)
    parser.add_argument("--megabytes", type=int, default=100)
    args = parser.parse_args()
    ensure_stack()
    write_result("media", asyncio.run(run(args.documents, args.megabytes)))


if __name__ == "__main__":
    main()
