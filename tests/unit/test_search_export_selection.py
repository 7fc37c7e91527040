"""A search-result export's selection and how it is named (services/evidence/selection.py), pure: the records are
the hits, once each, in order; the description, title and bag-info lines never carry the words or the contact."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.actions.exporting import check_formats
from services.actions.reading import SubjectExport
from services.core.refusals import InvalidRequest
from services.evidence.bag import bag_info
from services.evidence.jobs import FORMATS, search_header
from services.evidence.selection import (
    describe_search,
    query_digest,
    query_key,
    scope_lines,
    search_title,
    selected_events,
)
from services.review.search import IndexHit, SearchFilter

KEY = query_key(b"p" * 32)
ALICE, BOB = "a" * 64, "b" * 64
AT = datetime(2026, 3, 1, 12, tzinfo=UTC)


def hit(event_id: str, subject_ref: str | None = ALICE) -> IndexHit:
    return IndexHit(
        event_id=event_id,
        kind="message",
        type="text",
        phone_number_id="106540352242922",
        subject_ref=subject_ref,
        event_time=AT,
        received_at=AT,
        retention_class="standard",
        expires_at=None,
        deleted=False,
        edited=False,
    )


@pytest.mark.parametrize(
    ("hits", "expected"),
    [
        pytest.param([], (), id="nothing found"),
        pytest.param([hit("01"), hit("02", BOB)], ("01", "02"), id="in the search's order"),
        pytest.param([hit("02"), hit("01"), hit("02")], ("02", "01"), id="each once"),
    ],
)
def test_the_export_holds_the_hits(hits: list[IndexHit], expected: tuple[str, ...]) -> None:
    assert selected_events(hits) == expected


@pytest.mark.parametrize(
    ("query", "hits", "cases", "expected"),
    [
        pytest.param(
            SearchFilter(keywords="refund Dupont 0612345678", deleted_only=True, limit=500),
            [hit("01"), hit("02", BOB)],
            None,
            {"deleted_only": True, "keywords": 3, "hits": 2, "people": 2, "truncated": False},
            id="keywords: how many, never which",
        ),
        pytest.param(
            SearchFilter(contact="33612345678", phone_number_id="106540352242922", limit=2),
            [hit("01"), hit("02")],
            ["CASE-2026-0001"],
            {
                "phone_number_id": "106540352242922",
                "subject_refs": [ALICE],
                "hits": 2,
                "people": 1,
                "truncated": True,
                "cases": ["CASE-2026-0001"],
            },
            id="a contact: the pseudonyms found; a reader: the cases of their scope; the limit reached",
        ),
        pytest.param(
            SearchFilter(since=AT, kind="message"),
            [],
            [],
            {"since": AT.isoformat(), "kind": "message", "hits": 0, "people": 0, "truncated": False, "cases": []},
            id="a reader whose scope is empty",
        ),
    ],
)
def test_a_search_is_described_by_its_filters(
    query: SearchFilter, hits: list[IndexHit], cases: list[str] | None, expected: dict[str, Any]
) -> None:
    described = describe_search(query, hits, key=KEY, cases=cases)
    assert described.pop("query") == query_digest(KEY, query)
    assert described == expected


def test_the_query_digest_tells_searches_apart_and_not_the_words() -> None:
    same = query_digest(KEY, SearchFilter(keywords="Refund  approved"))
    assert same == query_digest(KEY, SearchFilter(keywords="approved refund", limit=10))  # order, case, limit
    assert same != query_digest(KEY, SearchFilter(keywords="refund denied"))
    assert same != query_digest(KEY, SearchFilter(keywords="refund approved", deleted_only=True))
    assert same != query_digest(query_key(b"q" * 32), SearchFilter(keywords="refund approved"))  # another archive
    assert len(same) == 16
    assert int(same, 16) >= 0


def test_a_saved_search_names_its_case() -> None:
    described = describe_search(
        SearchFilter(keywords="refund"), [hit("01")], key=KEY, cases=None, saved_search=("CASE-2026-0007", "s-1")
    )
    assert (described["case_ref"], described["saved_search"]) == ("CASE-2026-0007", "s-1")
    assert "saved search of case CASE-2026-0007" in search_title(described, "en")
    assert ("Export-Search-Case-Ref", "CASE-2026-0007") in scope_lines(described)


def test_the_bag_info_says_the_scope_and_the_readers_cases() -> None:
    query = SearchFilter(keywords="refund", phone_number_id="106540352242922", deleted_only=True)
    described = describe_search(query, [hit("01"), hit("02", BOB)], key=KEY, cases=["CASE-A", "CASE-B"])
    export = SubjectExport(messages=[], request_ref=None, generated_at=AT, subject_refs=(ALICE, BOB))
    header = search_header(described, export, export_id="job-1", language="fr", requested_by="r", reason="why")
    info = dict(bag_info(header, key_fingerprint="f", payload_bytes=1, payload_files=1))
    lines = bag_info(header, key_fingerprint="f", payload_bytes=1, payload_files=1)
    assert info["Export-Scope"] == "search"
    assert info["External-Description"].startswith("Résultat de recherche: 1 mot(s)-clé(s), non cités")
    assert info["Export-Search-Query-Digest"] == described["query"]
    assert (info["Export-Search-Hits"], info["Export-Search-People"], info["Export-Search-Keyword-Count"]) == (
        "2",
        "2",
        "1",
    )
    assert [v for k, v in lines if k == "Export-Search-Reader-Case"] == ["CASE-A", "CASE-B"]
    assert [v for k, v in lines if k == "Export-Custodian"] == [
        f"person: {ALICE[:12]} ({ALICE})",
        f"person: {BOB[:12]} ({BOB})",
    ]
    assert "refund" not in "\n".join(f"{k}: {v}" for k, v in lines)


@pytest.mark.parametrize(
    ("formats", "expected"),
    [
        pytest.param(["pdf", "rsmf", "pdf"], ("pdf", "rsmf"), id="each once, in order"),
        pytest.param(list(FORMATS), FORMATS, id="every format of the jobs"),
    ],
)
def test_formats_are_the_jobs(formats: list[str], expected: tuple[str, ...]) -> None:
    assert check_formats(formats) == expected


@pytest.mark.parametrize("formats", [[], ["exe"], ["pdf", "docx"]], ids=["none", "unknown", "one unknown"])
def test_other_formats_are_refused(formats: list[str]) -> None:
    with pytest.raises(InvalidRequest, match="formats must be among"):
        check_formats(formats)


# Words that nothing else in a description can spell: a fixed prefix no filter, label or number holds.
secret_words = st.lists(st.text("bcdfghjkmnpqrstvwxz", min_size=4, max_size=10).map(lambda w: f"qx{w}"), min_size=1)
contacts = st.text("0123456789", min_size=11, max_size=15).map(lambda n: f"9{n}")


@settings(max_examples=60, deadline=None)
@given(words=secret_words, contact=contacts, deleted=st.booleans(), language=st.sampled_from(["en", "fr"]))
def test_nothing_outside_the_export_names_the_words_or_the_contact(
    words: list[str], contact: str, deleted: bool, language: str
) -> None:
    query = SearchFilter(keywords=" ".join(words), contact=contact, deleted_only=deleted, since=AT)
    described = describe_search(query, [hit("01")], key=KEY, cases=["CASE-1"])
    shown = [
        orjson.dumps(described).decode(),
        search_title(described, "fr" if language == "fr" else "en"),
        "\n".join(f"{k}: {v}" for k, v in scope_lines(described)),
    ]
    for text in shown:
        assert contact not in text
        assert not any(word in text.lower() for word in words)
    assert described["keywords"] == len(set(words))  # distinct words, as the search counts them
