"""PDF transcripts (issue #25): a synthetic conversation of N messages (with a deleted, an edited message, images
and a document) rendered by services/evidence/pdf.py in volumes of each size asked, one child process per volume.
Prints per volume its pages, wall seconds, peak RSS and peak address space (what the memory limit bounds), and
the peak RSS of the parent process; the target is a peak RSS of at most 300 MB for every process.

    python -m bench.pdf_export [--messages 2000] [--volume-sizes 500,1000] [--images 20]
"""

from __future__ import annotations

import argparse
import io
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench.common import write_result
from devtools import transcripts
from services.evidence.header import MediaFiles
from services.evidence.pdf import VolumeLimits, write_pdf

MIB = 2**20


def photo(index: int) -> bytes:
    """A 1600 x 1200 JPEG, as a phone sends: what a thumbnail is drawn from."""
    buffer = io.BytesIO()
    Image.new("RGB", (1600, 1200), (40 + index * 7 % 200, 120, 160)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def run(messages: int, volume_sizes: list[int], images: int) -> dict[str, Any]:
    conversation = transcripts.conversation(messages)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-pdf-") as work:
        root = Path(work)
        media = transcripts.media_files(root, conversation, photo(0))
        by_event = dict(media.by_event)
        # More images, spread over the conversation: each is a file the worker reads and draws.
        step = max(1, messages // max(images, 1))
        for n, message in enumerate(conversation[5::step][: max(images - 1, 0)]):
            message.type = "image"
            message.payload = {"type": "image", "image": {"caption": f"photo {n}", "mime_type": "image/jpeg"}}
            (root / f"{message.event_id}.jpg").write_bytes(photo(n + 1))
            by_event[message.event_id] = Path(f"{message.event_id}.jpg")
        for size in volume_sizes:
            started = time.monotonic()
            volumes = write_pdf(
                conversation,
                transcripts.header(),
                MediaFiles(root, by_event),
                root / f"out-{size}",
                limits=VolumeLimits(messages_per_volume=size),
            )
            seconds = time.monotonic() - started
            runs.append(
                {
                    "messages_per_volume": size,
                    "volumes": len(volumes),
                    "seconds": round(seconds, 2),
                    "messages_per_s": round(messages / seconds, 1),
                    "pages": sum(v.pages for v in volumes),
                    "pdf_mb": round(sum(v.path.stat().st_size for v in volumes) / MIB, 2),
                    "peak_rss_mb": round(max(v.peak_rss_bytes for v in volumes) / MIB, 1),
                    "per_volume": [
                        {
                            "volume": v.number,
                            "messages": v.messages,
                            "pages": v.pages,
                            "seconds": round(v.seconds, 2),
                            "peak_rss_mb": round(v.peak_rss_bytes / MIB, 1),
                            "peak_address_space_mb": round(v.peak_address_space_bytes / MIB, 1),
                        }
                        for v in volumes
                    ],
                }
            )
            print(f"{messages:,} messages in volumes of {size}: {seconds:.1f} s", flush=True)
    return {
        "messages": messages,
        "images": min(images, messages),
        "memory_limit_mb": VolumeLimits().memory_limit_bytes // MIB,
        "runs": runs,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        # The process that splits the messages and starts the volumes (this one): it holds the messages only.
        "parent_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "targets": {"peak_rss_mb": 300},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--volume-sizes", default="500,1000", help="messages per volume, comma-separated")
    parser.add_argument("--images", type=int, default=20)
    args = parser.parse_args()
    sizes = [int(size) for size in args.volume_sizes.split(",")]
    write_result("pdf_export", run(args.messages, sizes, args.images))


if __name__ == "__main__":
    main()
