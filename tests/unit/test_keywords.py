"""The blind keyword index's pure parts: folding, words, tokens and what text of an event is searchable."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtools.samples import PAYLOADS_DIR
from services.core.events import parse_webhook
from services.core.keywords import (
    MAX_WORD_LENGTH,
    Tokenizer,
    keyword_key,
    keyword_token,
    query_tokens,
    searchable_text,
    tokens_of,
    words,
)

KEY = keyword_key(b"pepper-for-tests")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Électricité", {"electricite"}),
        (
            "Remboursement du CODE PROMO, s'il vous plaît!",
            {"remboursement", "du", "code", "promo", "il", "vous", "plait"},
        ),
        ("Straße", {"strasse"}),
        ("Ça coûte 40€ — livré vendredi", {"ca", "coute", "40", "livre", "vendredi"}),
        ("Привет мир", {"привет", "мир"}),
        ("a b c", set()),  # single letters are not searched
        ("order#4711/ref-B7", {"order", "4711", "ref", "b7"}),
        ("", set()),
    ],
)
def test_words_are_folded_and_split(text: str, expected: set[str]) -> None:
    assert words(text) == expected


def test_very_long_runs_are_not_words() -> None:
    assert words("x" * (MAX_WORD_LENGTH + 1) + " ok") == {"ok"}
    assert words("y" * MAX_WORD_LENGTH) == {"y" * MAX_WORD_LENGTH}


def test_accents_and_case_give_the_same_token() -> None:
    assert query_tokens(KEY, "electricite") == query_tokens(KEY, "ÉLECTRICITÉ") == query_tokens(KEY, "Électricité")
    assert tokens_of(KEY, ["Le remboursement"]) >= set(query_tokens(KEY, "REMBOURSEMENT"))


def test_tokens_are_keyed_and_fit_a_bigint() -> None:
    other = keyword_key(b"another-pepper")
    assert keyword_token(KEY, "promo") != keyword_token(other, "promo")
    assert keyword_token(KEY, "promo") == keyword_token(KEY, "promo")
    assert -(2**63) <= keyword_token(KEY, "promo") < 2**63
    with pytest.raises(ValueError, match="pepper"):
        keyword_key(b"")


@given(st.text(max_size=200))
def test_every_word_is_folded_alphanumeric_and_bounded(text: str) -> None:
    for word in words(text):
        assert MIN_LEN <= len(word) <= MAX_WORD_LENGTH
        assert all(c.isalnum() for c in word)
        assert word == word.casefold()


MIN_LEN = 2


def sample_texts(name: str) -> list[str]:
    body = (PAYLOADS_DIR / f"{name}.json").read_bytes()
    events = parse_webhook(body, raw_sha256="0" * 64, signature=None, received_at="-")
    return [text for event in events for text in searchable_text(event.kind, event.payload)]


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ("inbound_text", None),
        ("inbound_image", None),
        ("inbound_interactive_button_reply", None),
        ("inbound_interactive_list_reply", None),
        ("inbound_location", None),
        ("inbound_contacts", None),
        ("inbound_order", ["Love these!"]),
        ("inbound_edit_coexistence", ["Updated image caption"]),
        ("smb_message_echoes_text", None),
    ],
)
def test_the_texts_a_person_would_search_for_are_found(sample: str, expected: list[str] | None) -> None:
    texts = sample_texts(sample)
    assert texts, sample
    if expected is not None:
        assert texts == expected


@pytest.mark.parametrize("sample", ["status_delivered", "account_update_violation", "errors_value_level_rate_limit"])
def test_statuses_errors_and_account_updates_have_nothing_to_search(sample: str) -> None:
    assert sample_texts(sample) == []


def test_an_outbound_message_is_searched_by_what_the_business_sent() -> None:
    payload = {"request": {"type": "text", "text": {"body": "Votre remboursement est validé"}}, "response": {}}
    assert searchable_text("outbound", payload) == ["Votre remboursement est validé"]
    assert searchable_text("outbound", "not an object") == []


def test_ids_and_urls_of_media_are_not_text() -> None:
    payload = {"type": "image", "image": {"id": "1234567890", "sha256": "abc", "caption": "la facture"}}
    assert searchable_text("message", payload) == ["la facture"]


def test_the_tokenizer_memo_is_bounded_and_answers_like_the_function() -> None:
    tokenizer = Tokenizer(KEY, capacity=3)
    texts = ["commande 4711 remboursement", "facture 2026-03 électricité", "commande promo"]
    for text in texts:
        assert tokenizer.tokens([text]) == tokens_of(KEY, [text])
    assert len(tokenizer._memo) <= 3
    assert not any(any(c.isdigit() for c in word) for word in tokenizer._memo)
