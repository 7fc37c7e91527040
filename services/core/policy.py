"""Retention classes: how long each kind of archived record is kept (GDPR Art. 5(1)(e), storage limitation).

The policy is a YAML file, validated at start-up (``PolicyError`` names the offending entry)::

    version: 1
    default_class: standard          # records no class matches
    categories:                      # optional category label per business phone number
      "106540352242922": support
    classes:                         # first match wins, in this order
      - name: marketing
        keep_for: 365d               # units: s, m, h, d, w, y (365 d)
        match: {kind: [template, account]}
      - name: support
        keep_for: 3y
        match: {category: [support]}
      - name: prospects
        keep_for: 3y
        anchor: last_contact         # 3 years after the person's last message, call or preference (CNIL)
        match: {category: [sales]}
      - name: standard
        keep_for: 7y

A match rule may name ``phone_number_id``, ``kind``, ``type``, ``category`` and ``conversation`` (``group`` for
the records of a Cloud API group, ``one_to_one`` for the others); every key given must match (AND), any value of a
key may (OR). Classification uses only the pseudonymous metadata of a record, so the index
can be reclassified (and rebuilt) without decrypting anything.

``anchor`` says where ``keep_for`` runs from: ``event_time`` (the default: the record's own time) or
``last_contact``: the latest time the same person (under any identifier linked to the record's pseudonym: phone
number, business-scoped user id) wrote, was written to, called or set a preference. A record of a ``last_contact``
class is indexed with the expiry of its own time (a lower bound) and marked; a retention run that finds it expired
first looks for a later contact and, if there is one, moves the expiry on instead of deleting
(services/governance/retention_run.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

MATCH_KEYS = ("phone_number_id", "kind", "type", "category", "conversation")
CONVERSATIONS = ("group", "one_to_one")
ANCHORS = ("event_time", "last_contact")
DURATION = re.compile(r"^\s*(\d+)\s*([smhdwy])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


class PolicyError(ValueError):
    """The retention policy file is invalid; the message says where."""


def parse_duration(text: str) -> timedelta:
    match = DURATION.match(str(text))
    if not match or int(match.group(1)) <= 0:
        raise PolicyError(f"keep_for {text!r} is not a positive duration such as 30d, 12w, 7y")
    return timedelta(seconds=int(match.group(1)) * UNIT_SECONDS[match.group(2)])


@dataclass(frozen=True, slots=True)
class RetentionClass:
    name: str
    keep_for: timedelta
    match: Mapping[str, frozenset[str]]
    anchor: str = "event_time"  # one of ANCHORS

    def matches(self, facts: Mapping[str, str | None]) -> bool:
        return all(facts.get(key) in values for key, values in self.match.items())


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    classes: tuple[RetentionClass, ...]
    default_class: str
    categories: Mapping[str, str]

    def by_name(self, name: str) -> RetentionClass:
        for retention_class in self.classes:
            if retention_class.name == name:
                return retention_class
        raise KeyError(name)

    def class_of(
        self, *, phone_number_id: str | None, kind: str, type_: str | None, in_group: bool = False
    ) -> RetentionClass:
        """The first class whose rule matches the record's pseudonymous facts, else the default class."""
        facts = {
            "phone_number_id": phone_number_id,
            "kind": kind,
            "type": type_,
            "category": self.categories.get(phone_number_id or ""),
            "conversation": "group" if in_group else "one_to_one",
        }
        for retention_class in self.classes:
            if retention_class.match and retention_class.matches(facts):
                return retention_class
        return self.by_name(self.default_class)

    def classify(
        self,
        *,
        phone_number_id: str | None,
        kind: str,
        type_: str | None,
        event_time: datetime,
        in_group: bool = False,
    ) -> tuple[str, datetime]:
        """(class name, expiry) of one record."""
        retention_class = self.class_of(phone_number_id=phone_number_id, kind=kind, type_=type_, in_group=in_group)
        return retention_class.name, expiry(event_time, retention_class.keep_for)


def expiry(event_time: datetime, keep_for: timedelta) -> datetime:
    """``event_time + keep_for``, or the last representable instant when that lies beyond year 9999 (an event
    time near the end of the calendar is possible: Meta's timestamps are taken as sent)."""
    try:
        return event_time + keep_for
    except OverflowError:
        return datetime.max.replace(tzinfo=event_time.tzinfo)


class Classifier:
    """:meth:`RetentionPolicy.classify` remembered per (business number, kind, type, in a group): the archiver's
    hot path sees few distinct keys. At most ``capacity`` are kept; the memo is emptied when full."""

    def __init__(self, policy: RetentionPolicy, capacity: int = 10_000) -> None:
        self.policy = policy
        self.capacity = capacity
        self._memo: dict[tuple[str | None, str, str | None, bool], tuple[str, timedelta]] = {}
        # The classes whose clock runs from the person's last contact: their index rows are marked.
        self.last_contact_classes = frozenset(c.name for c in policy.classes if c.anchor == "last_contact")

    def __call__(
        self,
        phone_number_id: str | None,
        kind: str,
        type_: str | None,
        event_time: datetime,
        in_group: bool = False,
    ) -> tuple[str, datetime]:
        key = (phone_number_id, kind, type_, in_group)
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= self.capacity:
                self._memo.clear()
            retention_class = self.policy.class_of(
                phone_number_id=phone_number_id, kind=kind, type_=type_, in_group=in_group
            )
            found = self._memo[key] = (retention_class.name, retention_class.keep_for)
        return found[0], expiry(event_time, found[1])


def _strings(value: Any, where: str) -> frozenset[str]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str | int) and str(v) for v in values):
        raise PolicyError(f"{where}: expected a non-empty list of strings")
    return frozenset(str(v) for v in values)


def parse_policy(document: Any) -> RetentionPolicy:
    if not isinstance(document, dict):
        raise PolicyError("the policy must be a mapping with 'classes' and 'default_class'")
    if document.get("version", 1) != 1:
        raise PolicyError(f"unsupported policy version {document.get('version')!r} (expected 1)")
    unknown = set(document) - {"version", "default_class", "categories", "classes"}
    if unknown:
        raise PolicyError(f"unknown top-level key(s): {sorted(unknown)}")
    raw_classes = document.get("classes")
    if not isinstance(raw_classes, list) or not raw_classes:
        raise PolicyError("'classes' must be a non-empty list")
    classes: list[RetentionClass] = []
    for position, raw in enumerate(raw_classes):
        where = f"classes[{position}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise PolicyError(f"{where}: needs a 'name'")
        where = f"class {raw['name']!r}"
        if "keep_for" not in raw:
            raise PolicyError(f"{where}: needs 'keep_for'")
        extra = set(raw) - {"name", "keep_for", "match", "description", "anchor"}
        if extra:
            raise PolicyError(f"{where}: unknown key(s) {sorted(extra)}")
        match_raw = raw.get("match") or {}
        if not isinstance(match_raw, dict):
            raise PolicyError(f"{where}: 'match' must be a mapping")
        bad_keys = set(match_raw) - set(MATCH_KEYS)
        if bad_keys:
            raise PolicyError(f"{where}: match keys must be among {list(MATCH_KEYS)}, not {sorted(bad_keys)}")
        match = {key: _strings(value, f"{where}.match.{key}") for key, value in match_raw.items()}
        bad_conversations = sorted(match.get("conversation", frozenset()) - set(CONVERSATIONS))
        if bad_conversations:
            raise PolicyError(
                f"{where}: match.conversation must be among {list(CONVERSATIONS)}, not {bad_conversations}"
            )
        try:
            keep_for = parse_duration(raw["keep_for"])
        except PolicyError as exc:
            raise PolicyError(f"{where}: {exc}") from None
        anchor = raw.get("anchor", "event_time")
        if anchor not in ANCHORS:
            raise PolicyError(f"{where}: anchor must be one of {list(ANCHORS)}, not {anchor!r}")
        classes.append(RetentionClass(raw["name"], keep_for, match, str(anchor)))
    names = [c.name for c in classes]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise PolicyError(f"class names must be unique: {duplicates}")
    default = document.get("default_class")
    if default not in names:
        raise PolicyError(f"default_class {default!r} is not one of the classes {names}")
    categories_raw = document.get("categories") or {}
    if not isinstance(categories_raw, dict):
        raise PolicyError("'categories' must map phone_number_id to a label")
    categories = {str(k): str(v) for k, v in categories_raw.items()}
    return RetentionPolicy(tuple(classes), str(default), categories)


def load_policy(path: Path) -> RetentionPolicy:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"cannot read the retention policy {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path} is not valid YAML: {exc}") from None
    try:
        return parse_policy(document)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


DEFAULT_POLICY = RetentionPolicy(
    classes=(RetentionClass("standard", timedelta(days=7 * 365), {}),),
    default_class="standard",
    categories={},
)


def class_names(policy: RetentionPolicy) -> Sequence[str]:
    return [c.name for c in policy.classes]
