"""A held message as the customer would see it (services/review/drafts.py): WhatsApp's formatting rendered with
everything from the text escaped, and every message type a send may carry read into its draft."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.review.drafts import ALLOWED_TAGS, Attachment, Contact, Location, draft_of, draft_text, whatsapp_html

_OUR_TAGS = re.compile("</?(?:" + "|".join(ALLOWED_TAGS) + ')>|<code class="mono">')


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        pytest.param("*gras*", "<strong>gras</strong>", id="bold"),
        pytest.param("_italique_", "<em>italique</em>", id="italic"),
        pytest.param("~barré~", "<s>barré</s>", id="strike"),
        pytest.param("```x = *1*```", '<code class="mono">x = *1*</code>', id="mono, nothing inside"),
        pytest.param("`IBAN`", "<code>IBAN</code>", id="inline code"),
        pytest.param("*_les deux_*", "<strong><em>les deux</em></strong>", id="nested"),
        pytest.param("2*3*4", "2*3*4", id="inside a word: not formatting"),
        pytest.param("snake_case_name", "snake_case_name", id="underscores in a word"),
        pytest.param("* pas *", "* pas *", id="spaces inside the markers"),
        pytest.param("*a\nb*", "*a\nb*", id="not across a line"),
        pytest.param("ligne 1\nligne 2", "ligne 1\nligne 2", id="line breaks kept"),
        pytest.param("<b>x</b> & 'y'", "&lt;b&gt;x&lt;/b&gt; &amp; &#39;y&#39;", id="markup escaped"),
        pytest.param("*<img src=x onerror=alert(1)>*", "<strong>&lt;img src=x onerror=alert(1)&gt;</strong>", id="xss"),
    ],
)
def test_whatsapp_formatting(text: str, shown: str) -> None:
    assert str(whatsapp_html(text)) == shown


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("*_~`<>&\"' \nab<>/=é")) | st.characters(), max_size=80))
def test_the_output_holds_no_markup_from_the_input(text: str) -> None:
    shown = str(whatsapp_html(text))
    bare = _OUR_TAGS.sub("", shown)
    # No tag, no attribute, no raw ampersand of the input survives: only the tags the formatter adds.
    assert "<" not in bare
    assert ">" not in bare
    assert '"' not in bare
    assert re.search(r"&(?!(?:amp|lt|gt|#34|#39);)", bare) is None
    # And nothing of the text is lost but the markers themselves.
    unescaped = html.unescape(bare)
    left = iter(text)
    assert all(ch in left for ch in unescaped), (text, shown)


def body(kind: str, **value: Any) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": "15550001234", "type": kind, **value}


@pytest.mark.parametrize(
    ("send", "text", "expected"),
    [
        pytest.param(body("text", text={"body": "Bonjour *Marie*"}), None, {"text": "Bonjour *Marie*"}, id="text"),
        pytest.param(
            body("image", image={"id": "1234", "caption": "Votre facture"}),
            None,
            {"text": "Votre facture", "attachment": Attachment(type="image", name=None, media_id="1234")},
            id="image by id",
        ),
        pytest.param(
            body("document", document={"link": "https://x.example/f/facture.pdf", "filename": "facture-12.pdf"}),
            None,
            {"attachment": Attachment(type="document", name="facture-12.pdf", link="https://x.example/f/facture.pdf")},
            id="document by link",
        ),
        pytest.param(
            body("audio", audio={"link": "https://x.example/a/message.ogg"}),
            None,
            {"attachment": Attachment(type="audio", name="message.ogg", link="https://x.example/a/message.ogg")},
            id="audio named by its link",
        ),
        pytest.param(
            body(
                "template",
                template={
                    "name": "refund",
                    "language": {"code": "fr"},
                    "components": [
                        {"type": "body", "parameters": [{"type": "text", "text": "Marie"}]},
                        {
                            "type": "body",
                            "parameters": [{"type": "currency", "currency": {"fallback_value": "49,90 €"}}],
                        },
                        {"type": "button", "parameters": [{"type": "payload", "payload": "OK"}]},
                    ],
                },
            ),
            None,
            {"template": "refund (fr)", "parameters": ("Marie", "49,90 €"), "buttons": ("OK",), "text": None},
            id="template without its text",
        ),
        pytest.param(
            body("template", template={"name": "refund", "language": {"code": "fr"}}),
            "Bonjour Marie, 49,90 € vous sont remboursés.",
            {"text": "Bonjour Marie, 49,90 € vous sont remboursés.", "template": "refund (fr)"},
            id="template with the text the gateway archived",
        ),
        pytest.param(
            body(
                "interactive",
                interactive={
                    "type": "button",
                    "header": {"type": "text", "text": "Remboursement"},
                    "body": {"text": "Confirmez-vous ?"},
                    "footer": {"text": "Service client"},
                    "action": {"buttons": [{"type": "reply", "reply": {"id": "y", "title": "Oui"}}]},
                },
            ),
            None,
            {"header": "Remboursement", "text": "Confirmez-vous ?", "footer": "Service client", "buttons": ("Oui",)},
            id="reply buttons",
        ),
        pytest.param(
            body(
                "interactive",
                interactive={
                    "type": "list",
                    "body": {"text": "Choisissez"},
                    "action": {
                        "button": "Options",
                        "sections": [
                            {"title": "Offres", "rows": [{"id": "1", "title": "-20 %", "description": "Noël"}]}
                        ],
                    },
                },
            ),
            None,
            {"list_button": "Options", "text": "Choisissez"},
            id="list",
        ),
        pytest.param(
            body(
                "interactive",
                interactive={
                    "type": "cta_url",
                    "body": {"text": "Payez ici"},
                    "action": {
                        "name": "cta_url",
                        "parameters": {"display_text": "Payer", "url": "https://pay.example"},
                    },
                },
            ),
            None,
            {"link": ("Payer", "https://pay.example")},
            id="call-to-action link",
        ),
        pytest.param(
            body("location", location={"latitude": 48.85, "longitude": 2.35, "name": "Agence", "address": "Paris"}),
            None,
            {"location": Location(latitude="48.85", longitude="2.35", name="Agence", address="Paris")},
            id="location",
        ),
        pytest.param(
            body("contacts", contacts=[{"name": {"formatted_name": "Conseiller"}, "phones": [{"phone": "+331"}]}]),
            None,
            {"contacts": (Contact(name="Conseiller", phones=("+331",), emails=()),)},
            id="contacts",
        ),
        pytest.param(
            body("reaction", reaction={"message_id": "wamid.x", "emoji": "👍"}), None, {"reaction": "👍"}, id="reaction"
        ),
        pytest.param(body("order_details"), None, {"known": False}, id="a type not rendered"),
    ],
)
def test_every_message_type_reads_into_its_draft(send: Any, text: str | None, expected: dict[str, Any]) -> None:
    draft = draft_of(send, text)
    for name, value in expected.items():
        assert getattr(draft, name) == value, name
    shown = draft_text(draft)
    assert shown.startswith(f"[{draft.type}]")
    for part in (draft.text, draft.header, draft.footer, *draft.buttons, *draft.parameters):
        assert part is None or part in shown


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "type",
                        "text",
                        "body",
                        "template",
                        "interactive",
                        "action",
                        "buttons",
                        "image",
                        "link",
                        "components",
                        "parameters",
                        "sections",
                        "rows",
                        "title",
                        "header",
                        "contacts",
                        "location",
                        "name",
                        "reply",
                    ]
                ),
                inner,
                max_size=4,
            )
        ),
        max_leaves=20,
    )
)
def test_any_json_reads_into_a_draft_without_raising(value: Any) -> None:
    draft_text(draft_of(value))
