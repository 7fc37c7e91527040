"""What a search-result export holds, and how everything outside the export names that search. Pure: no I/O.

An export of a search result holds exactly the records the search showed to the person who asked for it: the hits'
event ids, frozen when the export is asked for (:func:`selected_events`), with the reader's case scope already
applied by the search itself (services/actions/reading.py ``search``). The job is run later, by another process,
and never runs the search again: what it exports cannot drift from what was seen.

The words of a keyword search may be a name or a number, and so may the contact a search names: the search is
described (:func:`describe_search`) by its filters without either — how many words, the pseudonyms the contact
stood for, the period, kind, type and flags, how many hits and people, the cases a reader's scope came from — and
a keyed digest of the whole query (:func:`query_digest`), which tells two exports of the same search apart from
two of different ones without saying what was searched. That description is what the job's row, the audit log
(``export.requested``), the four-eyes request and the export's own header (the bag-info's ``Export-Scope``
lines, the PDF's title) carry.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any, Final, Literal

from services.core.keywords import words
from services.review.search import IndexHit, SearchFilter

# What the derived key is for: a pepper-derived key of another purpose never digests a query.
QUERY_KEY_PURPOSE: Final = b"wa-archive search export query digest v1"
# The filters a description names as they are (none of them personal data); the contact and the words are not here.
PLAIN_FILTERS: Final = ("phone_number_id", "since", "until", "kind", "type", "deleted_only", "edited_only")


def query_key(pepper: bytes) -> bytes:
    """The key that digests search queries, derived from the pepper for this purpose alone."""
    return hmac.new(pepper, QUERY_KEY_PURPOSE, hashlib.sha256).digest()


def query_digest(key: bytes, query: SearchFilter) -> str:
    """A keyed digest (16 hex digits) of everything the query asks, its words (case, accents and order ignored, as
    the search ignores them) and contact included: equal for the same search, unrelated for another, and useless
    to anyone without the archive's pepper for guessing the words."""
    fields = asdict(query)
    fields["keywords"] = sorted(set(words(query.keywords))) if query.keywords else None
    canonical = repr(sorted((name, _plain(value)) for name, value in fields.items() if name != "limit"))
    return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()[:16]


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def selected_events(hits: Sequence[IndexHit]) -> tuple[str, ...]:
    """The event ids of the hits, each once, in the search's order: the records the export holds."""
    return tuple(dict.fromkeys(hit.event_id for hit in hits))


def describe_search(
    query: SearchFilter,
    hits: Sequence[IndexHit],
    *,
    key: bytes,
    cases: Sequence[str] | None = None,
    saved_search: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The search as the job, the audit log and the export name it: never its words nor the contact it named.

    ``cases``: the references of the cases a reader's scope came from (None: the DPO, who reads everything);
    ``saved_search``: (case reference, saved search id) when the search is a case's saved search."""
    description: dict[str, Any] = {
        name: _plain(value)
        for name, value in asdict(query).items()
        if name in PLAIN_FILTERS and value not in (None, False)
    }
    if query.keywords:
        description["keywords"] = len(words(query.keywords))  # how many words, never which
    people = sorted({hit.subject_ref for hit in hits if hit.subject_ref})
    if query.contact or query.subject_refs:
        description["subject_refs"] = people  # the person searched for, by the pseudonyms found
    if query.group_ref:
        description["group_ref"] = query.group_ref
    description["query"] = query_digest(key, query)
    description["hits"] = len(selected_events(hits))
    description["people"] = len(people)
    description["truncated"] = len(hits) >= query.limit
    if cases is not None:
        description["cases"] = list(cases)
    if saved_search is not None:
        description["case_ref"], description["saved_search"] = saved_search
    return description


TITLES: Final[dict[str, dict[str, str]]] = {
    "title": {"en": "Search result", "fr": "Résultat de recherche"},
    "keywords": {"en": "{n} keyword(s), not named", "fr": "{n} mot(s)-clé(s), non cités"},
    "person": {"en": "one person", "fr": "une personne"},
    "number": {"en": "business number {v}", "fr": "numéro professionnel {v}"},
    "since": {"en": "from {v}", "fr": "du {v}"},
    "until": {"en": "until {v}", "fr": "au {v}"},
    "kind": {"en": "kind {v}", "fr": "genre {v}"},
    "type": {"en": "type {v}", "fr": "type {v}"},
    "deleted_only": {"en": "deleted only", "fr": "supprimés seulement"},
    "edited_only": {"en": "edited only", "fr": "modifiés seulement"},
    "case": {"en": "saved search of case {v}", "fr": "recherche enregistrée du dossier {v}"},
    "hits": {"en": "{n} record(s)", "fr": "{n} enregistrement(s)"},
}


def search_title(description: Mapping[str, Any], language: Literal["en", "fr"]) -> str:
    """The export's title for a search (the PDF's header, the RSMF's subject, the bag's External-Description):
    what the description says, in ``language``; never a word searched for, never a contact."""

    def say(name: str, **values: object) -> str:
        return TITLES[name][language].format(**values)

    parts: list[str] = []
    if description.get("case_ref"):
        parts.append(say("case", v=description["case_ref"]))
    if description.get("keywords"):
        parts.append(say("keywords", n=description["keywords"]))
    if description.get("subject_refs"):
        parts.append(say("person"))
    if description.get("phone_number_id"):
        parts.append(say("number", v=description["phone_number_id"]))
    for name in ("since", "until"):
        if description.get(name):
            parts.append(say(name, v=str(description[name])[:10]))
    for name in ("kind", "type"):
        if description.get(name):
            parts.append(say(name, v=description[name]))
    parts += [say(name) for name in ("deleted_only", "edited_only") if description.get(name)]
    parts.append(say("hits", n=description.get("hits", 0)))
    return f"{say('title')}: {', '.join(parts)}"


def scope_lines(description: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The bag-info lines that say what a search-result export holds (``Export-Search-…``): its digest, filters,
    counts and, for a reader, the cases their scope came from. No words, no contact."""
    lines = [("Export-Search-Query-Digest", str(description.get("query", "")))]
    for name in ("case_ref", "saved_search", *PLAIN_FILTERS, "keywords", "hits", "people", "truncated"):
        value = description.get(name)
        if value not in (None, False, ""):
            label = "Keyword-Count" if name == "keywords" else name.replace("_", "-").title()
            lines.append((f"Export-Search-{label}", str(value).lower() if value is True else str(value)))
    lines += [("Export-Search-Reader-Case", ref) for ref in description.get("cases", ())]
    return lines
