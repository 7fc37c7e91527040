"""The words of a PDF transcript in English and French, with their plural forms (Babel's CLDR rules).

A small catalog of its own rather than the console's gettext catalogs: a transcript is a document handed over,
not a page of the console, and its words change with its layout, not with the console's. Placeholders are
``{name}``; a plural text has one entry per CLDR plural category of the language, ``other`` being the fallback (a
category a language has but the entry lacks, such as French ``many`` for a million, reads ``other``).
"""

from __future__ import annotations

from typing import Final, Literal

from babel import Locale
from babel.numbers import format_decimal

Language = Literal["en", "fr"]

TEXTS: Final[dict[str, dict[Language, str]]] = {
    "transcript": {"en": "Transcript", "fr": "Transcription"},
    "subject_title": {"en": "WhatsApp messages of {person}", "fr": "Messages WhatsApp de {person}"},
    "case": {"en": "Case", "fr": "Dossier"},
    "scope": {"en": "Scope", "fr": "Périmètre"},
    "custodians": {"en": "Custodians", "fr": "Dépositaires"},
    "period": {"en": "Period", "fr": "Période"},
    "time_zone": {"en": "Time zone", "fr": "Fuseau horaire"},
    "requested_by": {"en": "Requested by", "fr": "Demandé par"},
    "reason": {"en": "Reason", "fr": "Motif"},
    "generated_at": {"en": "Generated", "fr": "Produit le"},
    "export_id": {"en": "Export", "fr": "Export"},
    "volume": {"en": "Volume {volume} of {volumes}", "fr": "Volume {volume} sur {volumes}"},
    "page_of": {"en": "page {page} of {pages}", "fr": "page {page} sur {pages}"},
    "since": {"en": "since {start}", "fr": "depuis le {start}"},
    "until": {"en": "until {end}", "fr": "jusqu'au {end}"},
    "whole_archive": {"en": "everything archived", "fr": "tout ce qui est archivé"},
    "no_messages": {"en": "No message in this volume.", "fr": "Aucun message dans ce volume."},
    "the_business": {"en": "the business", "fr": "l'entreprise"},
    # directions
    "inbound": {"en": "received", "fr": "reçu"},
    "outbound": {"en": "sent", "fr": "envoyé"},
    # scopes
    "conversation": {"en": "conversation", "fr": "conversation"},
    "search": {"en": "search result", "fr": "résultat de recherche"},
    "subject_access": {"en": "the person's own data", "fr": "données de la personne"},
    # custodian kinds
    "business": {"en": "business number", "fr": "numéro de l'entreprise"},
    "person": {"en": "person", "fr": "personne"},
    "group": {"en": "group", "fr": "groupe"},
    # delivery statuses
    "status": {"en": "status: {status}", "fr": "statut : {status}"},
    "sent": {"en": "sent", "fr": "envoyé"},
    "delivered": {"en": "delivered", "fr": "distribué"},
    "read": {"en": "read", "fr": "lu"},
    "played": {"en": "played", "fr": "écouté"},
    "failed": {"en": "failed", "fr": "échec"},
    "deleted": {"en": "deleted", "fr": "supprimé"},
    # changes
    "deleted_by_customer": {"en": "DELETED by the customer", "fr": "SUPPRIMÉ par le client"},
    "deleted_by_business": {"en": "DELETED by the business", "fr": "SUPPRIMÉ par l'entreprise"},
    "deleted_at": {"en": "on {time}, {delay} after it was sent", "fr": "le {time}, {delay} après l'envoi"},
    "deleted_at_no_delay": {"en": "on {time}", "fr": "le {time}"},
    "time_unknown": {"en": "at an unknown time", "fr": "à une heure inconnue"},
    "original_content": {"en": "Original content:", "fr": "Contenu d'origine :"},
    "edited": {"en": "EDITED", "fr": "MODIFIÉ"},
    "original_sent": {"en": "Original, sent {time}:", "fr": "Original, envoyé le {time} :"},
    "edit_at": {"en": "Edit of {time}:", "fr": "Modification du {time} :"},
    "unreadable": {"en": "This record could not be read: {why}", "fr": "Cet enregistrement est illisible : {why}"},
    "quotes": {"en": "in reply to message {id}", "fr": "en réponse au message {id}"},
    "reacts_to": {"en": "reaction to message {id}", "fr": "réaction au message {id}"},
    "attachment": {"en": "Attachment: {facts}", "fr": "Pièce jointe : {facts}"},
    "not_exported": {"en": "file not in this export", "fr": "fichier absent de cet export"},
    "not_drawn": {"en": "image not drawn: {why}", "fr": "image non dessinée : {why}"},
}

PLURALS: Final[dict[str, dict[Language, dict[str, str]]]] = {
    "messages": {
        "en": {"one": "{num} message", "other": "{num} messages"},
        "fr": {"one": "{num} message", "other": "{num} messages"},
    },
    "volume_messages": {
        "en": {
            "one": "{num} message in this volume ({first}–{last} of {total})",
            "other": "{num} messages in this volume ({first}–{last} of {total})",
        },
        "fr": {
            "one": "{num} message dans ce volume ({first}–{last} sur {total})",
            "other": "{num} messages dans ce volume ({first}–{last} sur {total})",
        },
    },
    "edits": {
        "en": {"one": "{num} edit", "other": "{num} edits"},
        "fr": {"one": "{num} modification", "other": "{num} modifications"},
    },
    "bytes": {
        "en": {"one": "{num} byte", "other": "{num} bytes"},
        "fr": {"one": "{num} octet", "other": "{num} octets"},
    },
}


def text(language: Language, key: str, **values: object) -> str:
    """The text ``key`` in ``language`` with its placeholders filled (KeyError: a text the catalog lacks)."""
    return TEXTS[key][language].format(**values)


def plural(language: Language, key: str, count: int, **values: object) -> str:
    """The plural text ``key`` for ``count`` in ``language`` (its CLDR category; ``other`` when the entry has no
    form for it), ``{num}`` being ``count`` formatted for the language (1,000 / 1 000)."""
    forms = PLURALS[key][language]
    category = Locale.parse(language).plural_form(count)
    chosen = forms.get(category, forms["other"])
    return chosen.format(num=format_decimal(count, locale=language), **values)
