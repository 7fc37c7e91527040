"""The pure parts of the PDF transcripts (services/evidence/pdf.py, pdf_text.py): the HTML of a volume (escaping,
deletion and edit marks, plural forms, time zones), the CSS strings of the margin boxes, the volumes' split, the
transport of messages to a volume's process, and the words of a failed volume."""

from __future__ import annotations

import re
import string
from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools import transcripts
from services.evidence.header import Custodian, ExportHeader
from services.evidence.pdf import (
    MEMORY_EXIT_CODE,
    VERDICT_PREFIX,
    MediaEntry,
    VolumeLimits,
    VolumePlan,
    _failure,
    css_string,
    duration,
    esc,
    format_when,
    header_from_json,
    header_to_json,
    message_from_json,
    message_html,
    page_style,
    plan_volumes,
    script_language,
    sender_name,
    time_zone,
    transcript_html,
    volume_filename,
)
from services.evidence.pdf_text import PLURALS, TEXTS, plural
from services.review.assembly import Change, ConversationMessage

pytestmark = pytest.mark.unit

PARIS = ZoneInfo("Europe/Paris")
NNBSP = "\u202f"  # French groups thousands with a narrow no-break space; CLDR English puts one before AM/PM


def flat(value: str) -> str:
    """``value`` with its (narrow) no-break spaces as plain spaces: the expectations below are easier to read."""
    return value.replace(NNBSP, " ").replace("\xa0", " ")


def one_volume(messages: list[ConversationMessage], header: ExportHeader) -> str:
    return transcript_html(messages, header, {}, plan=VolumePlan(1, 0, len(messages)), volumes=1, total=len(messages))


def text_message(body: str) -> ConversationMessage:
    message = transcripts.conversation(1)[0]
    message.payload["text"] = {"body": body}
    return message


# ------------------------------------------------------------------------------------------------- volumes


@pytest.mark.parametrize(
    ("total", "per_volume", "expected"),
    [
        pytest.param(0, 500, [VolumePlan(1, 0, 0)], id="nothing: one empty volume, its header says what"),
        pytest.param(1, 500, [VolumePlan(1, 0, 1)], id="one message"),
        pytest.param(1000, 500, [VolumePlan(1, 0, 500), VolumePlan(2, 500, 500)], id="exact split"),
        pytest.param(
            1001, 500, [VolumePlan(1, 0, 500), VolumePlan(2, 500, 500), VolumePlan(3, 1000, 1)], id="one left over"
        ),
        pytest.param(3, 1, [VolumePlan(1, 0, 1), VolumePlan(2, 1, 1), VolumePlan(3, 2, 1)], id="one per volume"),
    ],
)
def test_volumes_split_the_messages_in_order(total: int, per_volume: int, expected: list[VolumePlan]) -> None:
    assert plan_volumes(total, per_volume) == expected


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 5_000), per_volume=st.integers(1, 1_000))
def test_volumes_cover_every_message_once(total: int, per_volume: int) -> None:
    plans = plan_volumes(total, per_volume)
    assert [p.number for p in plans] == list(range(1, len(plans) + 1))
    covered = [i for p in plans for i in range(p.first, p.first + p.count)]
    assert covered == list(range(total))
    assert all(0 < p.count <= per_volume for p in plans) or total == 0


@pytest.mark.parametrize(("total", "per_volume"), [(10, 0), (10, -1), (-1, 10)])
def test_a_senseless_split_is_refused(total: int, per_volume: int) -> None:
    with pytest.raises(ValueError, match=r"per volume|negative"):
        plan_volumes(total, per_volume)


def test_volume_file_names_hold_no_path_or_odd_character() -> None:
    assert volume_filename("EXP-1", 2) == "transcript-EXP-1-002.pdf"
    assert volume_filename("../../etc/passwd", 1) == "transcript-.._.._etc_passwd-001.pdf"
    assert "/" not in volume_filename("a/b\\c\nd", 1)


# ------------------------------------------------------------------------------------------------- escaping


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> & </style>'


def test_a_message_text_is_escaped_not_interpreted() -> None:
    header = transcripts.header()
    page = one_volume([text_message(HOSTILE)], header)
    assert "<script>" not in page
    assert "<img src=x" not in page
    assert page.count("</style>") == 1
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_header_texts_are_escaped_everywhere_they_go() -> None:
    header = transcripts.header()
    hostile = replace(
        header,
        title=HOSTILE,
        reason=HOSTILE,
        requested_by=HOSTILE,
        export_id='"; } @page { margin: 0 } x { content: "',
        custodians=(Custodian(kind="person", label=HOSTILE, ref="r"),),
    )
    page = one_volume([], hostile)
    assert "<script>" not in page
    assert page.count("</style>") == 1
    style = page[page.index("<style>") : page.index("</style>")]
    # Every header text in a margin box is one CSS string: no quote, brace or angle bracket of its own.
    for literal in re.findall(r'"((?:[^"\\]|\\.)*)"', style.split("@page", 1)[1]):
        assert not set(literal) & set('"{}<>;')


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_becomes_a_css_string_that_cannot_end_early(value: str) -> None:
    literal = css_string(value)
    assert literal[0] == literal[-1] == '"'
    inner = literal[1:-1]
    assert set(inner) <= set(string.ascii_letters + string.digits + " .,:-_()/\\")
    # Every backslash starts a six-digit hex escape: decoding gives the text back (forbidden characters U+FFFD).
    decoded = re.sub(r"\\([0-9a-f]{6})", lambda m: chr(int(m.group(1), 16)), inner)
    assert "\\" not in decoded or "\\" in value
    assert len(decoded) == len(value)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_is_escaped_for_html_and_holds_no_forbidden_character(value: str) -> None:
    escaped = esc(value)
    assert not set(escaped) & set('<>"')
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]", escaped)


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_a_transcript_shows_any_message_text_escaped(body: str) -> None:
    page = one_volume([text_message(body)], transcripts.header())
    assert esc(body) in page


# ------------------------------------------------------------------------------------------------- marks


@pytest.mark.parametrize(
    ("language", "mark", "when", "delay", "caption"),
    [
        pytest.param(
            "en",
            "DELETED by the customer",
            "Jan 1, 2026, 1:01:00 AM GMT+01:00",
            "on Jan 1, 2026, 1:02:30 AM GMT+01:00, 1 minute 30 seconds after it was sent",
            "Original content:",
            id="English",
        ),
        pytest.param(
            "fr",
            "SUPPRIMÉ par le client",
            "1 janv. 2026, 01:01:00 UTC+01:00",
            "le 1 janv. 2026, 01:02:30 UTC+01:00, 1 minute 30 secondes après l&#x27;envoi",
            "Contenu d&#x27;origine :",
            id="French",
        ),
    ],
)
def test_a_deleted_message_keeps_its_original_under_its_deletion_mark(
    language: str, mark: str, when: str, delay: str, caption: str
) -> None:
    header = transcripts.header(language=language)  # type: ignore[arg-type]
    deleted = transcripts.conversation(2)[1]
    block = flat(message_html(deleted, header, {}, PARIS))
    assert 'class="message outbound deleted"' in block
    assert f"{mark} {delay}" in block
    assert when in block
    assert caption in block
    assert esc(transcripts.DELETED_TEXT) in block


def test_a_deletion_by_the_business_at_an_unknown_time_says_so() -> None:
    deleted = transcripts.conversation(2)[1]
    assert deleted.deletion is not None
    deleted.deletion.by, deleted.deletion.at = "business", None
    block = message_html(deleted, transcripts.header(), {}, PARIS)
    assert "DELETED by the business at an unknown time" in block


def test_an_edited_message_lists_its_original_and_every_edit_with_their_times() -> None:
    edited = transcripts.conversation(3)[2]
    block = flat(message_html(edited, transcripts.header(), {}, PARIS))
    assert "EDITED · 2 edits" in block
    positions = [
        block.index("Original, sent Jan 1, 2026, 1:02:00 AM GMT+01:00:"),
        block.index(esc(transcripts.EDITED_ORIGINAL)),
        block.index("Edit of Jan 1, 2026, 1:02:30 AM GMT+01:00:"),
        block.index("Edit of Jan 1, 2026, 1:02:45 AM GMT+01:00:"),
        block.index(esc(transcripts.EDITED_NEW)),
    ]
    assert positions == sorted(positions)


def test_a_message_names_its_direction_sender_time_and_status() -> None:
    sent = transcripts.conversation(2)[1]
    sent.deletion = None
    block = flat(message_html(sent, transcripts.header(language="fr"), {}, PARIS))
    assert esc(f"envoyé · {transcripts.BUSINESS} · 1 janv. 2026, 01:01:00 UTC+01:00 · statut : lu") in block


def test_media_are_named_with_size_and_sha256_and_images_drawn() -> None:
    image, document = transcripts.conversation(5)[3:5]
    drawn = MediaEntry(name="photo.png", size=1234, sha256="ab" * 32, thumbnail="file:///t/thumb-000000.jpg")
    missing = MediaEntry(name="facture.pdf", size=None, sha256=None)
    header = transcripts.header()
    image_block = message_html(image, header, {image.event_id: drawn}, PARIS)
    assert '<img class="thumb" src="file:///t/thumb-000000.jpg" alt="photo.png">' in image_block
    assert f"Attachment: photo.png · 1,234 bytes · sha256 {'ab' * 32}" in image_block
    document_block = message_html(document, header, {document.event_id: missing}, PARIS)
    assert "Attachment: facture.pdf · file not in this export" in document_block


def test_an_unreadable_record_says_why_in_place_of_its_content() -> None:
    message = transcripts.conversation(1)[0]
    message.payload, message.unreadable = None, "not valid JSON"
    assert "This record could not be read: not valid JSON" in message_html(message, transcripts.header(), {}, PARIS)


def test_cjk_texts_carry_their_language_for_the_lang_rules() -> None:
    page = one_volume(
        [text_message("你好"), text_message("안녕하세요"), text_message("こんにちは")], transcripts.header()
    )
    assert '<div class="words" lang="zh">你好' in page
    assert '<div class="words" lang="ko">안녕하세요' in page
    assert '<div class="words" lang="ja">こんにちは' in page
    assert ':lang(zh) { font-family: "DejaVu Sans", "Noto Sans CJK SC", sans-serif; }' in page
    assert "Emoji" not in page  # naming the emoji font draws digits from it and is 8 times slower


@pytest.mark.parametrize(
    ("value", "language"),
    [("hello", None), ("Привет 🚚", None), ("中文", "zh"), ("한국어", "ko"), ("日本語のテキスト", "ja"), ("", None)],
)
def test_script_language(value: str, language: str | None) -> None:
    assert script_language(value) == language


def test_the_sender_is_the_custodian_or_the_number_in_a_group() -> None:
    header = transcripts.header()
    inbound, outbound = transcripts.conversation(2)
    assert sender_name(inbound, header) == transcripts.PERSON
    assert sender_name(outbound, header) == transcripts.BUSINESS
    group = replace(header, custodians=(Custodian(kind="group", label="Team", ref="g"),))
    assert sender_name(inbound, group) == "33612345678"
    assert sender_name(outbound, group) == "the business"
    assert sender_name(inbound, replace(group, custodians=())) == "33612345678"
    inbound.payload = None
    assert sender_name(inbound, replace(group, custodians=())) == "—"


# ------------------------------------------------------------------------------------------------- words


@pytest.mark.parametrize(
    ("language", "key", "count", "expected"),
    [
        ("en", "messages", 1, "1 message"),
        ("en", "messages", 0, "0 messages"),
        ("en", "messages", 1000, "1,000 messages"),
        ("fr", "messages", 0, "0 message"),  # French: 0 and 1 are singular
        ("fr", "messages", 1, "1 message"),
        ("fr", "messages", 2, "2 messages"),
        ("fr", "messages", 1_000_000, f"1{NNBSP}000{NNBSP}000 messages"),  # CLDR "many": our "other"
        ("en", "edits", 1, "1 edit"),
        ("fr", "edits", 3, "3 modifications"),
        ("fr", "bytes", 1, "1 octet"),
    ],
)
def test_plural_forms(language: str, key: str, count: int, expected: str) -> None:
    assert plural(language, key, count) == expected  # type: ignore[arg-type]


def test_every_text_has_both_languages_with_the_same_placeholders() -> None:
    def fields(value: str) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(value) if name}

    for key, by_language in TEXTS.items():
        assert set(by_language) == {"en", "fr"}, key
        assert fields(by_language["en"]) == fields(by_language["fr"]), key
    for key, forms in PLURALS.items():
        assert set(forms) == {"en", "fr"}, key
        placeholders = {frozenset(fields(text)) for language in forms.values() for text in language.values()}
        assert len(placeholders) == 1, key
        assert all({"one", "other"} <= set(language) for language in forms.values()), key


@pytest.mark.parametrize(
    ("seconds", "en", "fr"),
    [
        (0, "0 seconds", "0 seconde"),
        (1, "1 second", "1 seconde"),
        (90, "1 minute 30 seconds", "1 minute 30 secondes"),
        (3_661, "1 hour 1 minute", "1 heure 1 minute"),
        (2 * 86_400 + 5 * 3_600 + 7, "2 days 5 hours", "2 jours 5 heures"),
    ],
)
def test_a_delay_is_shown_in_its_two_largest_units(seconds: int, en: str, fr: str) -> None:
    assert (flat(duration(seconds, "en")), flat(duration(seconds, "fr"))) == (en, fr)


@pytest.mark.parametrize(
    ("zone", "moment", "language", "expected"),
    [
        ("Europe/Paris", datetime(2026, 1, 15, 12, tzinfo=UTC), "en", "Jan 15, 2026, 1:00:00 PM GMT+01:00"),
        ("Europe/Paris", datetime(2026, 7, 15, 12, tzinfo=UTC), "en", "Jul 15, 2026, 2:00:00 PM GMT+02:00"),
        ("Europe/Paris", datetime(2026, 7, 15, 12, tzinfo=UTC), "fr", "15 juil. 2026, 14:00:00 UTC+02:00"),
        ("America/New_York", datetime(2026, 1, 15, 12, tzinfo=UTC), "en", "Jan 15, 2026, 7:00:00 AM GMT-05:00"),
        ("UTC", datetime(2026, 1, 15, 12, tzinfo=UTC), "fr", "15 janv. 2026, 12:00:00 UTC+00:00"),
        ("Asia/Kolkata", 1_767_225_600, "en", "Jan 1, 2026, 5:30:00 AM GMT+05:30"),
    ],
)
def test_times_are_shown_in_the_headers_time_zone_with_their_offset(
    zone: str, moment: datetime | int, language: str, expected: str
) -> None:
    assert flat(format_when(moment, ZoneInfo(zone), language)) == expected  # type: ignore[arg-type]


def test_an_unknown_time_zone_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="Mars/Olympus"):
        time_zone("Mars/Olympus")
    with pytest.raises(ValueError, match="unknown time zone"):
        one_volume([], replace(transcripts.header(), time_zone="Mars/Olympus"))


def test_the_header_names_case_custodians_period_and_time_zone() -> None:
    page = flat(one_volume(transcripts.conversation(3), transcripts.header(language="fr")))
    for expected in (
        "Dossier</th><td>CASE-42",
        "Fuseau horaire</th><td>Europe/Paris (UTC+01:00)",
        "Période</th><td>1 janv. 2026, 01:00:00 UTC+01:00 – 1 févr. 2026, 01:00:00 UTC+01:00",
        f'{transcripts.PERSON} <span class="muted">(personne)',
        "Volume 1 sur 1 — 3 messages dans ce volume (1–3 sur 3)",
    ):
        assert expected in page


def test_every_page_carries_its_number_of_the_total_and_the_document_number() -> None:
    style = page_style(transcripts.header(language="fr"), VolumePlan(2, 500, 500), 3)
    bottom_left = re.search(r"@bottom-left \{ content: (.*?);", style)
    bottom_right = re.search(r"@bottom-right \{ content: (.*?);", style)
    assert bottom_left is not None
    assert bottom_right is not None
    assert bottom_left.group(1) == '"EXP-2026-0042-2-" counter(page)'
    assert bottom_right.group(1) == '"page " counter(page) " sur " counter(pages) ""'
    assert '"Volume 2 sur 3"' in style


# ------------------------------------------------------------------------------------------------- transport


def test_messages_reach_a_volumes_process_unchanged() -> None:
    for message in transcripts.conversation(6):
        assert message_from_json(message.to_json()).to_json() == message.to_json()


def test_the_header_reaches_a_volumes_process_unchanged() -> None:
    header = transcripts.header()
    assert header_from_json(header_to_json(header)) == header


@pytest.mark.parametrize(
    ("returncode", "stderr", "expected"),
    [
        (MEMORY_EXIT_CODE, f"{VERDICT_PREFIX}MemoryError\n", "exceeded its memory limit of 768 MiB"),
        (1, f"noise\n{VERDICT_PREFIX}OSError\n", "exited with code 1: OSError"),
        (-5, "GLib-ERROR creating thread: Resource temporarily unavailable\n", "died (signal 5), most likely"),
        (120, "", "died (exit code 120), most likely at its memory limit of 768 MiB"),
    ],
)
def test_a_failed_volume_says_why_without_repeating_its_stderr(returncode: int, stderr: str, expected: str) -> None:
    why = _failure(returncode, stderr, VolumeLimits())
    assert expected in why
    assert "GLib" not in why
    assert "noise" not in why


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


@st.composite
def any_message(draw: st.DrawFn) -> ConversationMessage:
    """A timeline item with any JSON where a payload goes, a random type, statuses, edits and deletion."""
    moment = st.none() | st.integers(0, 4_000_000_000)
    by = st.sampled_from(["customer", "business"])
    payload = draw(
        JSON
        | st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "image", "document"])},
            optional={"text": JSON, "image": JSON, "document": JSON, "from": JSON, "context": JSON},
        )
    )
    return ConversationMessage(
        event_id=draw(st.text("0123456789abcdef", min_size=32, max_size=32)),
        message_id=draw(st.none() | st.text(max_size=8)),
        kind=draw(st.sampled_from(["message", "echo", "history", "outbound"])),
        type=draw(st.none() | st.sampled_from(["text", "image", "document", "reaction", "edit"])),
        direction=draw(st.sampled_from(["inbound", "outbound"])),
        timestamp=draw(moment),
        received_at="2026-01-01T00:00:00+00:00",
        payload=payload,
        statuses=draw(st.lists(st.tuples(st.sampled_from(["sent", "read", "odd"]), moment), max_size=2)),
        edits=[Change(f"e{n}", "edit", draw(by), draw(moment), draw(JSON)) for n in range(draw(st.integers(0, 2)))],
        deletion=draw(st.none() | st.builds(Change, st.just("d"), st.just("revoke"), by, moment, st.none())),
        unreadable=draw(st.none() | st.text(max_size=8)),
    )


@settings(max_examples=150, deadline=None)
@given(any_message(), st.sampled_from(["en", "fr"]))
def test_any_message_renders_and_travels_to_its_volume_unchanged(message: ConversationMessage, language: str) -> None:
    header = replace(transcripts.header(), language=language)  # type: ignore[arg-type]
    block = message_html(message, header, {}, PARIS)
    assert block.startswith('<div class="message ')
    assert block.endswith("</div>")
    assert block.count("<div") == block.count("</div>")  # nothing in the payload opened or closed an element
    assert message_from_json(message.to_json()).to_json() == message.to_json()
