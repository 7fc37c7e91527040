"""One PDF volume, rendered in a process of its own: ``python -m services.evidence.pdf_worker JOB.json``.

services/evidence/pdf.py writes the job (the header, the volume's plan, its messages as a JSON Lines file, the media
files it may show, where to write) and starts this process for each volume. It first limits its own address space
(``RLIMIT_AS``), so a volume too large fails alone instead of taking the machine's memory; it then draws the
thumbnails of the volume's images, builds the HTML and renders it with WeasyPrint.

Contract: exit 0 with one JSON line on stdout (``pages``, ``peak_rss_bytes``,
``peak_address_space_bytes``); exit 3 when memory ran out; exit 1
on any other failure. Its stderr says only ``pdf volume: <exception type>``: never an exception's message, which
may quote a message's text (WeasyPrint's own warnings are silenced for the same reason).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import resource
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.evidence.pdf import (
    DRAWN_IMAGE_TYPES,
    MEMORY_EXIT_CODE,
    THUMBNAIL_PIXELS,
    VERDICT_PREFIX,
    MediaEntry,
    VolumePlan,
    header_from_json,
    message_from_json,
    transcript_html,
)
from services.review.assembly import ConversationMessage
from services.review.display import MEDIA_TYPES, message_content


def thumbnail(source: Path, target: Path) -> None:
    """A JPEG of at most THUMBNAIL_PIXELS a side of the image ``source``, turned as its EXIF says. Raises what
    Pillow raises for a file that is no image it reads, or of more than about 89 million pixels."""
    from PIL import Image, ImageOps  # noqa: PLC0415 — the worker alone draws

    with warnings.catch_warnings():
        # Above about 89 million pixels Pillow only warns: such an image (a decompression bomb, or a panorama) is
        # named, not drawn, rather than taking the volume's memory.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(source)
    with image:
        image.draft("RGB", (THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))  # JPEG: decode at a reduced scale, much less memory
        turned = ImageOps.exif_transpose(image)
        turned.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
        turned.convert("RGB").save(target, "JPEG", quality=80)


def media_entries(
    messages: Sequence[ConversationMessage], files: Mapping[str, Path], thumbnails: Path
) -> dict[str, MediaEntry]:
    """What the transcript says of each message's media: the file's name, size and sha256 when it is in the export
    (``files``, by event id), its thumbnail (drawn into ``thumbnails``) for an image, or why it was not drawn."""
    entries = {}
    for message in messages:
        content = message_content(message)
        path = files.get(message.event_id)
        if path is None and message.media is None and content.type not in MEDIA_TYPES:
            continue
        name = content.label or (path.name if path is not None else message.event_id)
        if path is None or not path.is_file():
            row_size = (message.media or {}).get("size_bytes")
            entries[message.event_id] = MediaEntry(
                name=name, size=row_size if isinstance(row_size, int) else None, sha256=None
            )
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        drawn: str | None = None
        problem: str | None = None
        if content.type in DRAWN_IMAGE_TYPES:
            target = thumbnails / f"thumb-{len(entries):06d}.jpg"
            try:
                thumbnail(path, target)
                drawn = target.as_uri()
            except Exception as exc:  # any image Pillow cannot read is named, not drawn
                problem = type(exc).__name__
        entries[message.event_id] = MediaEntry(
            name=name, size=path.stat().st_size, sha256=digest.hexdigest(), thumbnail=drawn, problem=problem
        )
    return entries


def render(job: Mapping[str, Any]) -> int:
    """Render the job's volume to its ``out`` file; the number of pages."""
    from weasyprint import HTML  # noqa: PLC0415 — after the memory limit is set
    from weasyprint.urls import URLFetcher  # noqa: PLC0415

    thumbnails = Path(job["thumbnails"])

    class ThumbnailsOnly(URLFetcher):  # type: ignore[misc]  # WeasyPrint has no type hints
        """Fetches the thumbnails this worker drew and nothing else: no network, no other file."""

        def fetch(self, url: str, headers: Any = None) -> Any:
            if not url.startswith(thumbnails.as_uri() + "/"):
                raise ValueError("only the transcript's thumbnails are fetched")
            return super().fetch(url, headers)

    with Path(job["messages"]).open(encoding="utf-8") as handle:
        messages = [message_from_json(json.loads(line)) for line in handle]
    root = Path(job["media_root"])
    files = {event_id: root / relative for event_id, relative in job["media"].items()}
    plan = VolumePlan(**job["plan"])
    document = HTML(
        string=transcript_html(
            messages,
            header_from_json(job["header"]),
            media_entries(messages, files, thumbnails),
            plan=plan,
            volumes=job["volumes"],
            total=job["total"],
        ),
        base_url=thumbnails.as_uri() + "/",
        url_fetcher=ThumbnailsOnly(allowed_protocols=("file",)),
    ).render()
    document.write_pdf(job["out"])
    return len(document.pages)


def peak_address_space() -> int:
    """The process's peak virtual size (``VmPeak``, what RLIMIT_AS bounds), 0 where /proc does not say."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv: Sequence[str]) -> int:
    job = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    limit = int(job["memory_limit_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logging.getLogger("weasyprint").disabled = True
    try:
        pages = render(job)
    except MemoryError:
        print(f"{VERDICT_PREFIX}MemoryError", file=sys.stderr)
        return MEMORY_EXIT_CODE
    except OSError as exc:
        # At the limit, what fails is not always Python's allocator: a library mapped (cffi's dlopen of Pango, a
        # font file) is refused with ENOMEM, or with an errno-less "failed to map segment". Near the limit, that
        # is the limit.
        if exc.errno == errno.ENOMEM or peak_address_space() >= limit * 0.9:
            print(f"{VERDICT_PREFIX}MemoryError", file=sys.stderr)
            return MEMORY_EXIT_CODE
        print(f"{VERDICT_PREFIX}{type(exc).__name__}", file=sys.stderr)
        return 1
    except Exception as exc:  # the parent names the volume; the type alone says what failed
        print(f"{VERDICT_PREFIX}{type(exc).__name__}", file=sys.stderr)
        return 1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kibibytes
    print(json.dumps({"pages": pages, "peak_rss_bytes": peak, "peak_address_space_bytes": peak_address_space()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
