"""PDF transcripts rendered for real (WeasyPrint over Debian's Pango and fonts) and read back with poppler-utils.

One render of 1,000 messages in two volumes of 500 (English; about 8 s, the suite's only large one): the deleted
message shows its original under its mark, the edited one its original and edits, the image is drawn, every
message is there in order across the volumes, and every page carries "page N of M" and its document number. A
small French transcript checks the French words and the CJK and emoji fonts; a volume over its memory limit fails
naming itself. The first page of each is kept as a PNG in .artifacts/screenshots/ (git-ignored) for a person to
look at. Last, ``wa-archive export --format pdf`` over the real stack: a person's messages archived (a deleted
one, an edited one, an image fetched through the Graph API stand-in), their PDF in French with the image drawn.
poppler-utils and the fonts come from ``deploy/local/stack.sh``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image
from pydantic import SecretStr

from devtools import pipeline, transcripts
from devtools.graph_api import FakeGraphApi
from devtools.pipeline import Person
from devtools.samples import REPO_ROOT
from services.core.settings import PostgresSettings
from services.evidence.pdf import PdfVolume, VolumeFailed, VolumeLimits, write_pdf
from services.evidence.pdf_worker import media_entries
from tests.helpers.kek_archive import Archive, run_cli

pytestmark = pytest.mark.integration

SCREENSHOTS = REPO_ROOT / ".artifacts" / "screenshots"


def poppler(*args: str) -> str:
    if shutil.which(args[0]) is None:
        pytest.fail(f"{args[0]} is missing: run `deploy/local/stack.sh install pdf`")
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout


def pages_text(pdf: Path) -> list[str]:
    """The text of every page, whitespace collapsed (a box may wrap a line anywhere; Babel's no-break spaces read
    as spaces); pdftotext ends every page with a form feed."""
    return [" ".join(page.split()) for page in poppler("pdftotext", str(pdf), "-").split("\f")[:-1]]


def page_count(pdf: Path) -> int:
    found = re.search(r"^Pages:\s+(\d+)$", poppler("pdfinfo", str(pdf)), re.MULTILINE)
    assert found is not None
    return int(found.group(1))


def keep_first_page(pdf: Path, name: str) -> Path:
    """The first page as a PNG at 60 dpi in .artifacts/screenshots/<name>.png, for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    poppler("pdftoppm", "-r", "60", "-f", "1", "-l", "1", "-singlefile", "-png", str(pdf), str(SCREENSHOTS / name))
    return SCREENSHOTS / f"{name}.png"


def png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def thousand(tmp_path_factory: pytest.TempPathFactory) -> list[PdfVolume]:
    root = tmp_path_factory.mktemp("pdf-thousand")
    messages = transcripts.conversation(1000)
    media = transcripts.media_files(root, messages, png_bytes(1600, 1200))
    return write_pdf(
        messages, transcripts.header(language="en"), media, root / "out", limits=VolumeLimits(messages_per_volume=500)
    )


def test_the_deleted_and_edited_messages_show_their_original_content(thousand: list[PdfVolume]) -> None:
    first = " ".join(pages_text(thousand[0].path)[:2])
    deleted = first.index(transcripts.DELETED_TEXT)
    mark = first.index("DELETED by the customer on Jan 1, 2026, 1:02:30")
    assert mark < deleted
    assert "1 minute 30 seconds after it was sent" in first[mark:deleted]
    assert "EDITED · 2 edits" in first
    original = first.index(f"Original, sent Jan 1, 2026, 1:02:00 AM GMT+01:00: {transcripts.EDITED_ORIGINAL}")
    assert original < first.index(f"Edit of Jan 1, 2026, 1:02:45 AM GMT+01:00: {transcripts.EDITED_NEW}")


def test_every_message_is_there_once_in_order_across_the_volumes(thousand: list[PdfVolume]) -> None:
    assert [(v.number, v.messages) for v in thousand] == [(1, 500), (2, 500)]
    numbers = [int(n) for v in thousand for n in re.findall(r"Message number (\d+):", " ".join(pages_text(v.path)))]
    # Messages 1 to 4 are the deleted, edited, image and document ones.
    assert numbers == [0, *range(5, 1000)]


def test_every_page_is_numbered_of_its_volume_with_its_document_number(thousand: list[PdfVolume]) -> None:
    for volume in thousand:
        texts = pages_text(volume.path)
        assert page_count(volume.path) == volume.pages == len(texts)
        assert volume.pages > 10
        first, last = volume.number * 500 - 499, volume.number * 500
        assert f"500 messages in this volume ({first:,}–{last:,} of 1,000)" in texts[0]
        for number, text in enumerate(texts, start=1):
            assert f"page {number} of {volume.pages}" in text
            assert f"EXP-2026-0042-{volume.number}-{number} " in f"{text} "
            assert f"Volume {volume.number} of 2" in text
        assert volume.sha256 == hashlib.sha256(volume.path.read_bytes()).hexdigest()


def test_the_image_is_drawn_as_a_thumbnail_and_the_files_named(thousand: list[PdfVolume]) -> None:
    images = poppler("pdfimages", "-list", str(thousand[0].path))
    # The 1600 x 1200 image, drawn as a JPEG thumbnail of 480 pixels its longest side (emoji are images too).
    assert re.search(r"^\s+1\s+\d+\s+image\s+480\s+360\s+rgb\s+3\s+8\s+jpeg", images, re.MULTILINE)
    first = " ".join(pages_text(thousand[0].path)[:2])
    assert "Attachment: facture-2026.pdf · 1,800 bytes · sha256 " in first
    assert hashlib.sha256(b"%PDF-1.4 stand-in\n" * 100).hexdigest() in first
    screenshot = keep_first_page(thousand[0].path, "pdf-transcript-en")
    with Image.open(screenshot) as page:
        assert page.size in {(496, 702), (497, 702)}  # A4 at 60 dpi


def test_a_french_transcript_with_chinese_korean_and_emoji(tmp_path: Path) -> None:
    messages = transcripts.conversation(8)
    messages[5].payload["text"] = {"body": "你好，订单已发货 🎉"}
    messages[6].payload["text"] = {"body": "안녕하세요, 주문이 발송되었습니다"}
    messages[7].payload["text"] = {"body": '<script>alert("x")</script> & </style>'}
    media = transcripts.media_files(tmp_path, messages, png_bytes(300, 400))
    (volume,) = write_pdf(messages, transcripts.header(language="fr"), media, tmp_path / "out")
    text = " ".join(pages_text(volume.path))
    assert "SUPPRIMÉ par le client le 1 janv. 2026, 01:02:30 UTC+01:00, 1 minute 30 secondes après l'envoi" in text
    assert "Contenu d'origine : " + transcripts.DELETED_TEXT in text
    assert "MODIFIÉ · 2 modifications" in text
    assert f"page 1 sur {volume.pages}" in text
    assert "EXP-2026-0042-1-1" in text
    assert "Pièce jointe : facture-2026.pdf · 1 800 octets · sha256" in text
    assert "你好，订单已发货" in text
    assert "안녕하세요, 주문이 발송되었습니다" in text
    assert '<script>alert("x")</script> & </style>' in text  # shown as text, not interpreted
    fonts = poppler("pdffonts", str(volume.path))
    assert "DejaVu-Sans" in fonts
    assert "NotoSansCJK" in fonts.replace("-", "")
    assert "Noto-Color-Emoji" in fonts
    keep_first_page(volume.path, "pdf-transcript-fr")


def test_a_volume_over_its_memory_limit_fails_naming_it(tmp_path: Path) -> None:
    messages = transcripts.conversation(30)
    media = transcripts.media_files(tmp_path, messages, png_bytes(10, 10))
    out = tmp_path / "out"
    limits = VolumeLimits(messages_per_volume=20, memory_limit_bytes=100 * 2**20)
    with pytest.raises(VolumeFailed, match=r"PDF volume 1 of 2 failed: .*memory limit of 100 MiB") as failed:
        write_pdf(messages, transcripts.header(), media, out, limits=limits)
    assert failed.value.volume == 1
    assert list(out.iterdir()) == []  # no partial file left


def test_media_are_named_and_an_image_that_cannot_be_read_is_not_drawn(tmp_path: Path) -> None:
    messages = transcripts.conversation(5)
    media = transcripts.media_files(tmp_path, messages, b"\x89PNG\r\n\x1a\n not really a PNG")
    thumbnails = tmp_path / "thumbnails"
    thumbnails.mkdir()
    image, document = messages[3], messages[4]
    entries = media_entries(messages, {k: media.root / v for k, v in media.by_event.items()}, thumbnails)
    assert set(entries) == {image.event_id, document.event_id}
    assert entries[image.event_id].thumbnail is None
    assert entries[image.event_id].problem == "UnidentifiedImageError"
    assert entries[image.event_id].sha256 == hashlib.sha256(b"\x89PNG\r\n\x1a\n not really a PNG").hexdigest()
    assert entries[document.event_id].name == "facture-2026.pdf"
    assert entries[document.event_id].size == 1800
    assert list(thumbnails.iterdir()) == []
    # A message whose media file is not in the export is still named, with the size the archive recorded.
    assert media_entries([document], {}, thumbnails)[document.event_id].size == 2048


def png_header(width: int, height: int) -> bytes:
    """The first bytes of a PNG that says it is ``width`` x ``height``: all Pillow reads before deciding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_an_image_of_a_hundred_million_pixels_is_named_not_drawn(tmp_path: Path) -> None:
    messages = transcripts.conversation(4)
    bomb = png_header(10_000, 10_000)
    media = transcripts.media_files(tmp_path, messages, bomb)
    files = {k: media.root / v for k, v in media.by_event.items()}
    entry = media_entries(messages, files, tmp_path)[messages[3].event_id]
    assert entry.thumbnail is None
    assert entry.problem == "DecompressionBombWarning"
    assert entry.sha256 == hashlib.sha256(bomb).hexdigest()


async def archive_conversation(archive: Archive, person: Person) -> bytes:
    """A person's text, its deletion, an edited text and an image (fetched through the Graph API stand-in),
    archived in the test's own schema and prefix; the image's bytes."""
    photo = png_bytes(640, 480)
    t = int(time.time()) - 3600
    async with FakeGraphApi(token="graph-token-for-pdf-tests") as graph:
        digest = graph.add_media("pdf-photo", photo)
        bodies = [
            pipeline.text_message(person, "wamid.P1", transcripts.DELETED_TEXT, t),
            pipeline.revoke(person, "wamid.P2", "wamid.P1", t + 90),
            pipeline.text_message(person, "wamid.P3", transcripts.EDITED_ORIGINAL, t + 120),
            pipeline.edit(person, "wamid.P4", "wamid.P3", transcripts.EDITED_NEW, t + 150),
            pipeline.image(person, "wamid.P5", t + 180, id="pdf-photo", mime_type="image/png", sha256=digest),
        ]
        events = pipeline.events_of(bodies)
        await pipeline.produce(f"127.0.0.1:{archive.demo_env['WA_KAFKA_PORT']}", archive.topic, events)
        settings = pipeline.archiver_settings(
            archive.demo_env, archive.topic, archive.dlq, archive.prefix, graph=graph.graph_settings()
        ).model_copy(
            update={"pg": PostgresSettings(dsn=SecretStr(archive.dsn_of("ARCHIVER"))), "keys": archive.keys(archive.a)}
        )
        async with pipeline.running_archiver(settings):
            await pipeline.wait_indexed(archive.pool, {e.event_id for e in events})
            for _ in range(300):  # the image is fetched with its event; bounded wait for its row
                if await archive.pool.fetchval("SELECT count(*) FROM archived_media WHERE status = 'archived'"):
                    return photo
                await asyncio.sleep(0.1)
    raise AssertionError("the image was not archived")


async def test_the_cli_exports_a_persons_conversation_as_a_pdf(archive: Archive, tmp_path: Path) -> None:
    person = Person.fresh()
    photo = await archive_conversation(archive, person)
    out = tmp_path / "export"
    argv = ["export", "--contact", person.wa_id, "--reason", "ticket 7", "--out", str(out), "--format", "pdf"]
    env = archive.cli_env(archive.a)
    done = await asyncio.to_thread(run_cli, env, *argv, "--language", "fr", "--time-zone", "Europe/Paris")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    path, pages, sha256 = line.split("\t")
    pdf = Path(path)
    assert pdf.parent == out
    assert pages == f"{page_count(pdf)} pages"
    assert sha256 == f"sha256 {hashlib.sha256(pdf.read_bytes()).hexdigest()}"
    text = " ".join(pages_text(pdf))
    assert f"Messages WhatsApp de {person.wa_id}" in text
    assert "SUPPRIMÉ par le client" in text
    assert "1 minute 30 secondes après l'envoi" in text
    assert f"Contenu d'origine : {transcripts.DELETED_TEXT}" in text
    assert "MODIFIÉ · 1 modification" in text
    assert transcripts.EDITED_ORIGINAL in text
    assert transcripts.EDITED_NEW in text
    assert f"sha256 {hashlib.sha256(photo).hexdigest()}" in text
    (media,) = (out / "media").iterdir()
    assert media.read_bytes() == photo
    assert re.search(r"image\s+480\s+360\s+rgb\s+3\s+8\s+jpeg", poppler("pdfimages", "-list", str(pdf)))
    keep_first_page(pdf, "pdf-transcript-cli-fr")

    refused = await asyncio.to_thread(run_cli, env, *argv, "--time-zone", "Mars/Olympus")
    assert refused.returncode == 2
    assert "unknown time zone 'Mars/Olympus'" in refused.stderr
