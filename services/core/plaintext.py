"""Decode an archived record's plaintext for reading: any JSON the archive accepted, made safe for every output.

The archive seals each record as the envelope's JSON bytes (:meth:`services.core.events.Event.to_json`, or the exact
``event/1`` bytes Kafka carried), and it accepts whatever the standard library's JSON decoder reads: a lone
surrogate escape (``"\\ud83d"``: half of an emoji, cut by a sender), an integer beyond 64 bits, nesting beyond
orjson's 1,024 levels. orjson refuses the first and the last and turns the second into a float; every output
encodes text as UTF-8 (HTTP bodies, Jinja pages, the terminal, ``orjson.dumps``), which a lone surrogate cannot be.

:func:`decode_record` is the one way the read side turns plaintext into a value:

- orjson first (the fast path, exact for everything it accepts), else the standard library under the same
  recursion limit the archiver splits under, refusing NaN and ±Infinity as the archive did (``loads_exact``);
- every lone surrogate in any string of the result, object keys included, becomes U+FFFD (the replacement
  character): decoded values are valid Unicode, so no output can fail on them. That is the decision for display
  and for the JSON the API, the CLI and the subject-access export write: those are views of the record, and a
  surrogate escape in them would make the client's own decoder refuse the answer (as orjson refused the record).
  The archived bytes are never changed: the sealed record keeps its escape, and an export that carries raw records
  (the JSON Lines of an evidence export, services/evidence/jsonl.py) carries those bytes, not this view.
  ``replaced`` says how many characters a view shows as U+FFFD. An object key that the replacement would make
  equal to another key gets one more U+FFFD, so that no member is hidden;
- a plaintext that is still not readable (not UTF-8, not JSON, nested past the limit) gives
  :class:`UndecodableRecord` with a reason in fixed words that quote nothing of the content.

:func:`read_envelope` adds the envelope checks the conversation views rely on (an object, with an event id, a kind
and a time of the right types). :func:`json_bytes` writes decoded values out (orjson, else the standard library for
integers beyond 64 bits and nesting beyond orjson's 255 levels).

Nothing here raises for bad plaintext, logs or does I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from services.core.events import JSON_RECURSION_LIMIT, STRICT_JSON_DECODER, deep_enough, loads_exact

__all__ = [
    "REPLACEMENT",
    "DecodedRecord",
    "UndecodableRecord",
    "decode_record",
    "display_safe",
    "json_bytes",
    "read_envelope",
]

REPLACEMENT: Final = "\ufffd"
# The archiver splits (and so encodes) a record under services.core.events.JSON_RECURSION_LIMIT: what it wrote, the
# standard library reads and writes again under as much (services.core.events, not the journal: that brings the
# Kafka client, which `wa-archive --help` should not load).
RECURSION_LIMIT: Final = JSON_RECURSION_LIMIT
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
# orjson reads an integer beyond 64 bits (>= 9.2e18: 19 digits or more) as a float. Digits mapped to "0" and every
# other byte to " ", a run of 19 "0" finds such a number in a few microseconds (no digit run that long: none there),
# a third of walking the decoded value for large floats; the walk then decides for the rare record that has one.
_DIGITS: Final = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_DIGIT_RUN: Final = b"0" * 19
# Envelope keys whose value, when present, must be a string or null for the conversation views to order and link it.
_OPTIONAL_TEXT_KEYS: Final = ("message_id", "original_message_id", "type", "received_at")


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    """A record's decoded JSON value, valid Unicode throughout; ``replaced`` lone surrogates show as U+FFFD."""

    value: Any
    replaced: int = 0


@dataclass(frozen=True, slots=True)
class UndecodableRecord:
    """A record whose plaintext cannot be read as an envelope; ``reason`` is fixed words, never its content."""

    reason: str


def _standard_library(raw: bytes) -> Any:
    text = raw.decode()  # strict UTF-8: the archive never wrote anything else
    with deep_enough():
        return STRICT_JSON_DECODER.decode(text)


@dataclass(frozen=True, slots=True)
class _Slow:
    """A value the standard library decoded (orjson refused the text): it may hold lone surrogates."""

    value: Any


def decode_record(plaintext: bytes) -> DecodedRecord | UndecodableRecord:
    """The JSON value of an archived record's plaintext, made display-safe (module docstring); never raises for
    what the bytes hold."""
    try:
        try:
            value = orjson.loads(plaintext)
        except orjson.JSONDecodeError:
            value = _Slow(_standard_library(plaintext))
        else:
            if _LONG_DIGIT_RUN in plaintext.translate(_DIGITS):
                # Maybe an integer beyond 64 bits, which orjson reads as a float: loads_exact decides.
                value = loads_exact(plaintext, lambda raw: _Slow(_standard_library(raw)))
    except UnicodeDecodeError:
        return UndecodableRecord("not UTF-8 text")
    except RecursionError:
        return UndecodableRecord("nested too deeply")
    except ValueError:  # JSONDecodeError, NaN or Infinity
        return UndecodableRecord("not JSON")
    if not isinstance(value, _Slow):
        return DecodedRecord(value)  # orjson's strings are valid Unicode: it refuses lone surrogates
    safe, replaced = display_safe(value.value)
    return DecodedRecord(safe, replaced)


def _repaired(text: str) -> tuple[str, int]:
    return _SURROGATE.subn(REPLACEMENT, text)


def display_safe(value: Any) -> tuple[Any, int]:
    """``value`` (decoded JSON) with every lone surrogate of every string and key replaced by U+FFFD, and how
    many were replaced. Values without one are returned as they are (no copy); only the containers on the way to a
    replaced string are rebuilt. Iterative: the nesting may be deeper than Python's recursion limit."""
    if type(value) is str:
        return _repaired(value)
    if type(value) is not dict and type(value) is not list:
        return value, 0
    # Post-order over containers: each container is rebuilt (if one of its members changed) once its members are.
    replaced = 0
    done: dict[int, Any] = {}  # id(original container) -> its safe version
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        node, expanded = stack.pop()
        if not expanded:
            stack.append((node, True))
            members = node.values() if type(node) is dict else node
            stack.extend((member, False) for member in members if type(member) is dict or type(member) is list)
            continue
        if type(node) is dict:
            safe_dict, count = _safe_dict(node, done)
            done[id(node)] = safe_dict
            replaced += count
        else:
            safe_list, count = _safe_list(node, done)
            done[id(node)] = safe_list
            replaced += count
    return done[id(value)], replaced


def _safe_member(member: Any, done: dict[int, Any]) -> tuple[Any, int]:
    if type(member) is str:
        return _repaired(member)
    if type(member) is dict or type(member) is list:
        return done[id(member)], 0
    return member, 0


def _safe_list(node: list[Any], done: dict[int, Any]) -> tuple[list[Any], int]:
    replaced = 0
    safe: list[Any] = []
    for member in node:
        repaired, count = _safe_member(member, done)
        safe.append(repaired)
        replaced += count
    changed = replaced or any(a is not b for a, b in zip(safe, node, strict=True))
    return (safe if changed else node), replaced


def _safe_dict(node: dict[str, Any], done: dict[int, Any]) -> tuple[dict[str, Any], int]:
    replaced = 0
    keys = [_repaired(key) for key in node]
    # Keys that were valid stay exactly as sent; a repaired key that would take one's name (or another repaired
    # key's) gets one more U+FFFD, so that no member of the object is hidden by the repair.
    taken = {key for key, (_safe, count) in zip(node, keys, strict=True) if count == 0}
    safe: dict[str, Any] = {}
    changed = False
    for member, (repaired_key, count) in zip(node.values(), keys, strict=True):
        safe_key = repaired_key
        if count:
            while safe_key in taken:
                safe_key += REPLACEMENT
            taken.add(safe_key)
            replaced += count
            changed = True
        repaired, member_count = _safe_member(member, done)
        replaced += member_count
        changed = changed or repaired is not member
        safe[safe_key] = repaired
    return (safe if changed else node), replaced


def read_envelope(plaintext: bytes) -> DecodedRecord | UndecodableRecord:
    """:func:`decode_record`, then the checks the conversation views rely on: a JSON object whose ``event_id`` and
    ``kind`` are strings, ``timestamp`` an integer or null, ``message_id``, ``original_message_id``, ``type`` and
    ``received_at`` strings or null (or absent), ``subject`` an object or null. Anything else is
    :class:`UndecodableRecord` ("not an event envelope: ...")."""
    decoded = decode_record(plaintext)
    if isinstance(decoded, UndecodableRecord):
        return decoded
    problem = _envelope_problem(decoded.value)
    return decoded if problem is None else UndecodableRecord(f"not an event envelope: {problem}")


def _envelope_problem(value: Any) -> str | None:
    if type(value) is not dict:
        return "not a JSON object"
    get = value.get
    for name in ("event_id", "kind"):
        if type(get(name)) is not str:
            return f"{name!r} is not a string"
    timestamp = get("timestamp")
    if timestamp is not None and type(timestamp) is not int:
        return "'timestamp' is not an integer"
    for name in _OPTIONAL_TEXT_KEYS:
        found = get(name)
        if found is not None and type(found) is not str:
            return f"{name!r} is not a string"
    subject = get("subject")
    if subject is not None and type(subject) is not dict:
        return "'subject' is not an object"
    return None


def json_bytes(value: Any, *, indent: bool = False, default: Callable[[Any], Any] | None = None) -> bytes:
    """UTF-8 JSON of a decoded value (and whatever an adapter adds around it): orjson, else the standard library,
    which writes integers beyond 64 bits and nesting beyond orjson's 255 levels. Strings must be valid Unicode
    (:func:`display_safe`); ``default`` converts what JSON has no type for (``str`` for dates, in the CLI)."""
    try:
        return orjson.dumps(value, default=default, option=orjson.OPT_INDENT_2 if indent else None)
    except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, or too deep
        pass
    with deep_enough():
        text = json.dumps(
            value,
            ensure_ascii=False,
            allow_nan=False,
            indent=2 if indent else None,
            separators=None if indent else (",", ":"),  # orjson's
            default=default,
        )
    return text.encode()
