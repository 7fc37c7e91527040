"""An export written to a folder: the renderers of services/evidence/ over one set of messages, media and header,
and, for the whole package, the signed BagIt bag around them.

:func:`write_package` is what ``wa-archive export --format …`` runs (services/cli) and what an export job writes
before it uploads the folder. Formats:

- ``json`` / ``html``: the subject-access documents (services/review/export.py), as before;
- ``jsonl``: ``events.jsonl`` (the events as archived) and ``media/`` (services/evidence/jsonl.py);
- ``rsmf``: ``<stem>.rsmf``, the RSMF 2.0 EML with its media inside (services/evidence/rsmf.py);
- ``all``: every one of them under ``data/``, with the PDF transcript's volumes (services/evidence/pdf.py, in the
  header's language and time zone), and the folder made a bag signed with the export signing key
  (services/evidence/bag.py). The folder must be empty or new: a bag holds exactly what its manifests list.

- ``pdf``: the PDF transcript's volumes, and the media they name in ``media/`` (a person's own PDF is the CLI's
  ``export_pdf``, services/cli/commands.py; a search result's is written here).

Media are read once, streamed to files (``media/``), and every renderer takes them from there
(:class:`~services.evidence.header.MediaFiles`); for ``rsmf`` alone they are written to a temporary folder in the
destination that is removed afterwards.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal, get_args

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.core.plaintext import DecodedRecord, decode_record
from services.evidence.bag import PAYLOAD_DIR, SignedBag, write_bag
from services.evidence.header import Custodian, ExportHeader, MediaFiles
from services.evidence.jsonl import EVENTS_FILE, MediaStream, write_jsonl, write_media
from services.evidence.pdf import VolumeLimits, write_pdf
from services.evidence.pdf_text import text
from services.evidence.rsmf import rsmf_manifest, write_rsmf
from services.review.assembly import ConversationMessage
from services.review.export import write_export

ExportFormat = Literal["json", "html", "both", "pdf", "jsonl", "rsmf", "all"]
EXPORT_FORMATS: Final[tuple[ExportFormat, ...]] = get_args(ExportFormat)
# What a signed bag may hold (``all`` holds every one): a case export may ask for some of them only.
BAG_FORMATS: Final[tuple[ExportFormat, ...]] = ("json", "html", "jsonl", "rsmf", "pdf")


class PackageError(ValueError):
    """The export cannot be written where asked (a bag's folder that is not empty); nothing was decrypted for it
    when raised by :func:`check_destination`."""


@dataclass(kw_only=True)
class WrittenPackage:
    paths: list[Path] = field(default_factory=list)
    bag: SignedBag | None = None
    media: int = 0


def check_destination(out: Path, export_format: ExportFormat) -> None:
    """Refuse, before anything is read, a bag's folder that already holds files."""
    if export_format == "all" and out.exists() and any(out.iterdir()):
        raise PackageError(f"{out} is not empty: a bag is written into an empty or new folder")


def profile_names(archived: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    """The profile names the envelopes carry (``contact``: Meta's ``profile.name`` beside the ``wa_id``), by id."""
    names: dict[str, str] = {}
    for _, plaintext in archived:
        decoded = decode_record(plaintext)
        if not isinstance(decoded, DecodedRecord) or not isinstance(decoded.value, dict):
            continue
        contact = decoded.value.get("contact")
        if not isinstance(contact, dict):
            continue
        profile = contact.get("profile")
        name = profile.get("name") if isinstance(profile, dict) else None
        who = contact.get("wa_id") or contact.get("user_id")
        if isinstance(name, str) and name and isinstance(who, str) and who:
            names[who] = name
    return names


def subject_access_header(
    *,
    contact: str,
    subject_refs: Sequence[str],
    phone_number_id: str | None,
    messages: Sequence[ConversationMessage],
    requested_by: str,
    reason: str,
    generated_at: datetime,
    request_ref: str | None,
    language: Literal["en", "fr"] = "en",
    time_zone: str = "UTC",
) -> ExportHeader:
    """The header of a person's own export (Art. 15/20): the person as custodian (by the id they were asked for),
    the business number when one was named, the period of their messages, the title in ``language``."""
    times = [m.timestamp for m in messages if m.timestamp is not None]
    custodians = [Custodian(kind="person", label=contact, ref=subject_refs[0] if subject_refs else "")]
    if phone_number_id:
        custodians.append(Custodian(kind="business", label=phone_number_id, ref=phone_number_id))
    stamp = generated_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return ExportHeader(
        scope="subject_access",
        title=text(language, "subject_title", person=contact),
        export_id=request_ref or f"SAR-{stamp}-{uuid.uuid4().hex[:8]}",
        custodians=tuple(custodians),
        period_start=datetime.fromtimestamp(min(times), UTC) if times else None,
        period_end=datetime.fromtimestamp(max(times), UTC) if times else None,
        time_zone=time_zone,
        language=language,
        requested_by=requested_by,
        reason=reason,
        generated_at=generated_at,
        case_ref=None,
    )


def _stem(header: ExportHeader) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in header.export_id)


async def write_package(
    out: Path,
    export_format: ExportFormat,
    *,
    header: ExportHeader,
    messages: Sequence[ConversationMessage],
    archived: Sequence[tuple[str, bytes]],
    media: AsyncIterable[MediaStream] | None,
    request_ref: str | None,
    signing_key: Ed25519PrivateKey | None = None,
    pdf_limits: VolumeLimits | None = None,
    with_pdf: bool = True,
    bag_formats: Collection[str] | None = None,
) -> WrittenPackage:
    """Write the export in ``export_format`` into ``out`` (see the module docstring); ``all`` needs
    ``signing_key`` (``pdf_limits``: how its PDF volumes are bounded; ``with_pdf=False``: a bag without them;
    ``bag_formats``: the bag holds these of :data:`BAG_FORMATS` only, every one when None).
    ``media`` is consumed only by the formats that carry media (``jsonl``, ``rsmf``, ``all``). What the file
    system, the bucket, a corrupt medium or a PDF volume (:class:`~services.evidence.pdf.VolumeFailed`) raises
    propagates (a medium found corrupt is never left half written)."""
    if export_format == "all" and signing_key is None:
        raise PackageError("a bag is signed: no export signing key given")
    check_destination(out, export_format)
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    payload = out / PAYLOAD_DIR if export_format == "all" else out
    await asyncio.to_thread(payload.mkdir, parents=True, exist_ok=True)
    written = WrittenPackage()
    wanted: Collection[str] = (
        [f for f in BAG_FORMATS if (f != "pdf" or with_pdf) and (bag_formats is None or f in bag_formats)]
        if export_format == "all"
        else ("json", "html")
        if export_format == "both"
        else (export_format,)
    )
    stem = f"{'search' if header.scope == 'search' else 'subject'}-export-{_stem(header)}"
    if "json" in wanted or "html" in wanted:
        formats = [f for f in ("json", "html") if f in wanted]
        written.paths += await asyncio.to_thread(
            write_export, messages, payload, formats=formats, request_ref=request_ref, now=header.generated_at
        )
    scratch: Path | None = None
    files = MediaFiles(payload)
    if media is not None and ("jsonl" in wanted or "rsmf" in wanted or "pdf" in wanted):
        root = payload
        if "jsonl" not in wanted and export_format != "pdf":
            # The media go inside the RSMF only: a folder of their own, removed after, in ``out`` (where the operator
            # made room for the export; a pod's /tmp is small).
            scratch = root = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=".media-", dir=out))
        files = await write_media(media, root)
        written.media = len(files.by_event)
    try:
        if "jsonl" in wanted:
            path = payload / EVENTS_FILE
            await asyncio.to_thread(write_jsonl, archived, path)
            written.paths.append(path)
            written.paths += [files.root / p for p in files.by_event.values()]
        if "rsmf" in wanted:
            package = rsmf_manifest(messages, header, files, names=profile_names(archived))
            written.paths.append(await asyncio.to_thread(write_rsmf, package, header, payload / f"{stem}.rsmf"))
        if "pdf" in wanted:
            volumes = await asyncio.to_thread(write_pdf, messages, header, files, payload, limits=pdf_limits)
            written.paths += [volume.path for volume in volumes]
            if export_format == "pdf":  # the media the transcript names, beside it
                written.paths += [files.root / p for p in files.by_event.values()]
    finally:
        if scratch is not None:
            await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)
    if export_format == "all":
        assert signing_key is not None
        written.bag = await asyncio.to_thread(write_bag, out, header, signing_key)
    return written
