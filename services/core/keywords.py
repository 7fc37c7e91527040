"""Keyed keyword tokens (a blind index): words of message content searchable without their plaintext in the
index.

- :func:`words`: the words of a text, case- and accent-insensitive ("Électricité" and "electricite" are one
  word), in any script; no stemming. Unicode letters and digits make words; everything else separates them.
- :func:`keyword_token`: a word as a signed 64-bit integer, the first 8 bytes of HMAC-SHA256 under a key derived
  from the pepper (``keyword_key``), so that it cannot be computed from a dictionary by whoever lacks the pepper.
- :func:`searchable_text`: the texts of an archived event a person would search for (a message's body, captions,
  button and list titles, a location's name and address, a shared contact's name, an edit's new text, the text
  of an outbound message), never ids, numbers or URLs of media.

What the index then reveals to someone holding the database without the pepper is written in docs/GDPR.md and
docs/ARCHITECTURE.md ("A blind keyword index"): which records of one person share a word (equality), and how often
each token occurs (frequency), not the words.
"""

from __future__ import annotations

import hmac
import re
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any, Final

from services.core.vocabulary import WEBHOOK_MESSAGE_KINDS

# A word longer than this is not something a person types into a search box (a URL, a base64 blob).
MAX_WORD_LENGTH: Final = 40
MIN_WORD_LENGTH: Final = 2
_KEY_DOMAIN: Final = b"keyword-index\x00v1"


def keyword_key(pepper: bytes) -> bytes:
    """The key of the keyword tokens, derived from the pepper under its own domain."""
    if not pepper:
        raise ValueError("keyword tokens need a non-empty pepper")
    return hmac.digest(pepper, _KEY_DOMAIN, "sha256")


_WORD = re.compile(r"[^\W_]+")  # runs of Unicode letters and digits
_HAS_DIGIT = re.compile(r"\d")


def _fold(text: str) -> str:
    """Lower case without accents: NFKD, combining marks dropped, case folded ("Ǆ" → "dž", "ß" → "ss")."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def words(text: str) -> set[str]:
    """The distinct searchable words of ``text``."""
    return {word for word in _WORD.findall(_fold(text)) if MIN_WORD_LENGTH <= len(word) <= MAX_WORD_LENGTH}


def keyword_token(key: bytes, word: str) -> int:
    """A word's token: the first 8 bytes of HMAC-SHA256(key, word), as PostgreSQL's bigint."""
    digest = hmac.digest(key, word.encode("utf-8", "surrogatepass"), "sha256")
    return int.from_bytes(digest[:8], "big", signed=True)


class Tokenizer:
    """:func:`keyword_token` under one key, remembered per word: a language's everyday words recur in every batch,
    and one HMAC per word and message was most of the archiver's tokenizing cost. Words with a digit (order
    numbers, amounts, dates) rarely recur and are not remembered; at most ``capacity`` others are (in process
    memory only, like the messages being sealed: ≈5 MB full), and the memo is emptied when full."""

    def __init__(self, key: bytes, capacity: int = 50_000) -> None:
        self.key = key
        self.capacity = capacity
        self._memo: dict[str, int] = {}

    def tokens(self, texts: Iterable[str]) -> set[int]:
        found: set[int] = set()
        memo = self._memo
        for text in texts:
            for word in words(text):
                token = memo.get(word)
                if token is None:
                    token = keyword_token(self.key, word)
                    if not _HAS_DIGIT.search(word):
                        if len(memo) >= self.capacity:
                            memo.clear()
                        memo[word] = token
                found.add(token)
        return found


def tokens_of(key: bytes, texts: Iterable[str]) -> set[int]:
    """The tokens of every word of ``texts``."""
    return {keyword_token(key, word) for text in texts for word in words(text)}


def query_tokens(key: bytes, query: str) -> list[int]:
    """The tokens a search for ``query`` must all find (its words, folded like the index's), sorted."""
    return sorted(tokens_of(key, [query]))


# Per message type, the keys of its object that hold text a person wrote or read.
_TEXT_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "text": ("body",),
    "image": ("caption",),
    "video": ("caption",),
    "document": ("caption", "filename"),
    "button": ("text",),
    "location": ("name", "address"),
}


def _strings(node: Any, keys: Iterable[str]) -> Iterator[str]:
    if isinstance(node, dict):
        for key in keys:
            value = node.get(key)
            if isinstance(value, str) and value:
                yield value


def _message_texts(message: Any) -> Iterator[str]:
    """The texts of a Cloud API message object (inbound, echoed, history, or an outbound request)."""
    if not isinstance(message, dict):
        return
    kind = message.get("type")
    if not isinstance(kind, str):
        return
    body = message.get(kind)
    yield from _strings(body, _TEXT_KEYS.get(kind, ()))
    if kind == "interactive" and isinstance(body, dict):
        for reply in ("button_reply", "list_reply"):
            yield from _strings(body.get(reply), ("title", "description"))
        yield from _strings(body.get("body"), ("text",))  # an outbound interactive message
        yield from _strings(body.get("header"), ("text",))
        yield from _strings(body.get("footer"), ("text",))
    elif kind == "contacts" and isinstance(body, list):
        for contact in body:
            if isinstance(contact, dict):
                yield from _strings(contact.get("name"), ("formatted_name",))
    elif kind == "order" and isinstance(body, dict):
        yield from _strings(body, ("text",))
    elif kind == "edit" and isinstance(body, dict):
        yield from _message_texts(body.get("message"))


def searchable_text(kind: str, payload: Any) -> list[str]:
    """The texts of an archived event's payload worth searching: messages, echoes, history and outbound
    messages; nothing for statuses, errors, account or template updates."""
    if kind in WEBHOOK_MESSAGE_KINDS:
        return list(_message_texts(payload))
    if kind == "outbound" and isinstance(payload, dict):
        return list(_message_texts(payload.get("request")))
    return []
