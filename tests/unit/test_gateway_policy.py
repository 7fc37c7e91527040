"""The send gateway's policies (services/gateway/policy.py): which sends are held, which refused, what text is
looked at, and the files refused at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway.policy import (
    IBAN_LENGTHS,
    PolicyError,
    Template,
    find_ibans,
    iban_valid,
    load_policies,
    main,
    parse_policy,
    recipient_hash,
    visible_texts,
)

pytestmark = pytest.mark.unit

BLOCKED = "+33 6 12 34 56 78"
POLICY = f"""
[[hold]]
name = "promotion"
words = ["promotion", "offre spéciale", "remboursement"]

[[hold]]
name = "amount"
patterns = ['\\d+(?:[.,]\\d{{2}})?\\s?(?:€|eur\\b)', '(?:€|eur|\\$)\\s?\\d[\\d ]*']

[[hold]]
name = "iban"
iban = true

[[hold]]
name = "marketing"
template_categories = ["marketing"]
template_names = ["summer_sale"]

[[refuse]]
name = "do-not-contact"
recipients_sha256 = ["{recipient_hash(BLOCKED)}"]
"""
FR_IBAN = "FR7630006000011234567890189"
FR_IBAN_SPACED = "FR76 3000 6000 0112 3456 7890 189"


def text(body: str, to: str = "33699999999") -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": body}}


@pytest.mark.parametrize(
    ("request_", "template", "held"),
    [
        pytest.param(text("Votre REMBOURSEMENT est en cours"), None, ("promotion",), id="a word, any case"),
        pytest.param(text("Une Offre   Spéciale pour vous"), None, ("promotion",), id="a phrase, spaces"),
        pytest.param(text("une offre speciale"), None, ("promotion",), id="a phrase without its accent"),
        pytest.param(text("les promotions du mois"), None, (), id="not on a word boundary"),
        pytest.param(text("remboursé hier"), None, (), id="another word"),
        pytest.param(text("Vous recevrez 49,90 € demain"), None, ("amount",), id="an amount in euros"),
        pytest.param(text("EUR 1 200 credited"), None, ("amount",), id="EUR before"),
        pytest.param(text("only $15 today"), None, ("amount",), id="dollars"),
        pytest.param(text("order 4990 shipped"), None, (), id="a number alone"),
        pytest.param(text(f"IBAN: {FR_IBAN_SPACED}."), None, ("iban",), id="an IBAN with spaces"),
        pytest.param(text(f"iban {FR_IBAN.lower()}"), None, ("iban",), id="an IBAN in lower case"),
        pytest.param(text("FR7630006000011234567890188"), None, (), id="a checksum that fails"),
        pytest.param(
            {"type": "image", "to": "1", "image": {"id": "77", "caption": "Promotion d'été"}},
            None,
            ("promotion",),
            id="a caption",
        ),
        pytest.param(
            {"type": "document", "to": "1", "document": {"link": "https://x/remboursement.pdf"}},
            None,
            (),
            id="a link is not seen",
        ),
        pytest.param(
            {"type": "document", "to": "1", "document": {"id": "7", "filename": "remboursement.pdf"}},
            None,
            ("promotion",),
            id="a document's filename",
        ),
        pytest.param(
            {
                "type": "interactive",
                "to": "1",
                "interactive": {
                    "type": "button",
                    "body": {"text": "Choose"},
                    "footer": {"text": "Offre spéciale"},
                    "action": {"buttons": [{"type": "reply", "reply": {"id": "promotion", "title": "Yes"}}]},
                },
            },
            None,
            ("promotion",),
            id="an interactive footer (a button's id is not seen)",
        ),
        pytest.param(
            {
                "type": "template",
                "to": "1",
                "template": {
                    "name": "order_update",
                    "components": [{"type": "body", "parameters": [{"type": "text", "text": "€42"}]}],
                },
            },
            Template(name="order_update", category="UTILITY"),
            ("amount",),
            id="a template parameter",
        ),
        pytest.param(
            {"type": "template", "to": "1", "template": {"name": "july"}},
            Template(name="july", category="UTILITY", text="Profitez de notre promotion"),
            ("promotion",),
            id="the template's own text",
        ),
        pytest.param(
            {"type": "template", "to": "1", "template": {"name": "july"}},
            Template(name="july", category="MARKETING"),
            ("marketing",),
            id="a template category",
        ),
        pytest.param(
            {"type": "template", "to": "1", "template": {"name": "summer_sale"}},
            Template(name="summer_sale"),
            ("marketing",),
            id="a template name",
        ),
        pytest.param(
            text("Remboursement de 12 € sur FR76 3000 6000 0112 3456 7890 189"),
            None,
            ("promotion", "amount", "iban"),
            id="several rules",
        ),
    ],
)
def test_what_is_held(request_: Any, template: Template | None, held: tuple[str, ...]) -> None:
    verdict = parse_policy(POLICY, "t.toml").judge(request_, template)
    assert verdict.held == held
    assert verdict.refused == ()


def test_a_recipient_never_written_to_is_refused_whatever_the_text() -> None:
    policy = parse_policy(POLICY, "t.toml")
    assert policy.judge(text("remboursement", to="33612345678")).refused == ("do-not-contact",)
    assert policy.judge(text("hello", to="+33612345678")).refused == ("do-not-contact",)
    assert policy.judge(text("hello", to="33612345679")).refused == ()


def test_visible_texts_leave_addressing_and_ids_out() -> None:
    request = {
        "messaging_product": "whatsapp",
        "to": "33612345678",
        "context": {"message_id": "wamid.x"},
        "type": "interactive",
        "interactive": {
            "type": "list",
            "header": {"type": "text", "text": "H"},
            "body": {"text": "B"},
            "action": {"button": "Menu", "sections": [{"title": "S", "rows": [{"id": "r1", "title": "R"}]}]},
        },
    }
    assert sorted(visible_texts(request)) == ["B", "H", "Menu", "R", "S"]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param("[[hold]]\nname = 'x'\n", "needs words", id="a rule without a condition"),
        pytest.param("[[hold]]\nname = 'Bad Name'\nwords=['a']\n", "metric label", id="a name with spaces"),
        pytest.param("[[hold]]\nname='a'\nwords=['x']\n[[hold]]\nname='a'\niban=true\n", "twice", id="twice"),
        pytest.param("[[hold]]\nname='a'\npatterns=['(']\n", "not a regular expression", id="a broken regex"),
        pytest.param("[[hold]]\nname='a'\nwordz=['x']\n", "unknown keys wordz", id="a misspelt key"),
        pytest.param("[[refuse]]\nname='a'\nrecipients_sha256=['33612345678']\n", "never the numbers", id="clear"),
        pytest.param("[holds]\n", "unknown tables", id="an unknown table"),
        pytest.param("hold = [", "not TOML", id="not TOML"),
    ],
)
def test_a_malformed_file_is_refused_with_its_reason(text: str, error: str) -> None:
    with pytest.raises(PolicyError, match=error) as raised:
        parse_policy(text, "1065.toml")
    assert str(raised.value).startswith("1065.toml")


def test_a_folder_gives_each_number_its_file_and_the_rest_the_default(tmp_path: Path) -> None:
    (tmp_path / "1065.toml").write_text(POLICY, encoding="utf-8")
    (tmp_path / "default.toml").write_text("[[hold]]\nname = 'iban-only'\niban = true\n", encoding="utf-8")
    policies = load_policies(tmp_path)
    assert policies.for_number("1065") is not None
    assert policies.for_number("1065").judge(text("promotion")).held == ("promotion",)  # type: ignore[union-attr]
    assert policies.for_number("2000").judge(text("promotion")).held == ()  # type: ignore[union-attr]
    assert policies.rule_names == {"promotion", "amount", "iban", "marketing", "do-not-contact", "iban-only"}
    (tmp_path / "notes.toml").write_text("", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"notes\.toml"):
        load_policies(tmp_path)
    assert main(["check", str(tmp_path)]) == 2


def test_the_demo_policy_holds_the_seeds_examples() -> None:
    policies = load_policies(Path(__file__).parents[2] / "deploy/local/policies")
    assert policies.default is not None
    for body in ("Offre spéciale ce week-end", "Votre remboursement de 49,90 € est parti", f"IBAN {FR_IBAN_SPACED}"):
        assert policies.default.judge(text(body)).held, body
    assert policies.default.judge(text("Votre colis est parti")).held == ()


# An IBAN of a registry country with a valid checksum: a random basic bank account number, check digits computed.
@st.composite
def ibans(draw: st.DrawFn) -> str:
    country = draw(st.sampled_from(sorted(IBAN_LENGTHS)))
    bban = draw(st.text("0123456789", min_size=IBAN_LENGTHS[country] - 4, max_size=IBAN_LENGTHS[country] - 4))
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def spaced(iban: str) -> str:
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


SURROUNDING = st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "Z")), max_size=40)


@settings(max_examples=100, deadline=None)
@given(iban=ibans(), before=SURROUNDING, after=SURROUNDING, grouped=st.booleans())
def test_any_valid_iban_in_any_text_is_matched(iban: str, before: str, after: str, grouped: bool) -> None:
    assert iban_valid(iban)
    written = spaced(iban) if grouped else iban
    assert iban in find_ibans(f"{before} {written} {after}")


@settings(max_examples=100, deadline=None)
@given(iban=ibans(), position=st.integers(min_value=4), shift=st.integers(min_value=1, max_value=9))
def test_a_corrupted_iban_is_not_matched(iban: str, position: int, shift: int) -> None:
    at = 4 + position % (len(iban) - 4)
    corrupted = iban[:at] + str((int(iban[at]) + shift) % 10) + iban[at + 1 :]
    assert not iban_valid(corrupted)
    assert list(find_ibans(f"virement sur {spaced(corrupted)} merci")) == []


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=100, deadline=None)
@given(request=JSON, category=st.none() | st.text(max_size=10), name=st.none() | st.text(max_size=10))
def test_judging_never_raises_on_any_json(request: Any, category: str | None, name: str | None) -> None:
    verdict = parse_policy(POLICY, "t.toml").judge(request, Template(name=name, category=category, text=name))
    assert set(verdict.held) <= {"promotion", "amount", "iban", "marketing"}
