"""Policies of the send gateway (pure): which sends are held for a manager's approval, and to whom nothing is sent.

One TOML file per business phone number in ``WA_GATEWAY_POLICY_DIR``: ``<phone_number_id>.toml``, and an optional
``default.toml`` for the numbers without a file of their own. Every file is read and checked when the gateway
starts (:func:`load_policies`); a malformed one stops it with a message naming the file and the rule
(:class:`PolicyError`), never a partial policy. A file::

    [[hold]]
    name = "promotion"                       # what logs, metrics and the approver see: never the matched text
    words = ["promotion", "offre spéciale"]  # case- and accent-insensitive, on word boundaries

    [[hold]]
    name = "amount"
    patterns = ['\\d+(?:[.,]\\d{2})?\\s?(?:€|eur)\\b']  # Python regular expressions, case-insensitive

    [[hold]]
    name = "iban"
    iban = true                              # an IBAN whose mod-97 checksum holds, spaces allowed

    [[hold]]
    name = "marketing"
    template_categories = ["MARKETING"]      # of the template's definition (the gateway's template cache)
    template_names = ["summer_sale"]

    [[refuse]]
    name = "do-not-contact"
    recipients_sha256 = ["<sha256 hex of the wa_id's digits>"]   # python -m services.gateway.policy hash <number>

A rule holds a send when any of its conditions matches. Text is looked for wherever the customer would see it:
:func:`visible_texts` (text bodies, captions, document filenames, interactive headers/bodies/footers/buttons/rows,
template parameters, and the template's own text when the cache has it).

Recipients that must never be written to are listed hashed (SHA-256 of the number's digits): the policy file is
configuration — reviewed, versioned, mounted from a ConfigMap — and holds no phone number in clear. Such a send is
refused at once rather than held: no approver may lawfully send it, so holding it would only ask someone to say no.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tomllib
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

DEFAULT_FILE: Final = "default.toml"
# A rule name is a metric label and is written to logs and events: short, no personal data, no spaces.
RULE_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
MAX_RULES: Final = 64  # a bound on the metric's label set, per file

# Keys whose values the customer never sees (addressing, identifiers, codes, URLs): not searched.
_HIDDEN_KEYS: Final = frozenset(
    {
        "messaging_product",
        "recipient_type",
        "to",
        "recipient",
        "type",
        "id",
        "link",
        "code",
        "policy",
        "sub_type",
        "index",
        "payload",
        "biz_opaque_callback_data",
        "mime_type",
        "format",
        "message_id",
        "context",
        "status",
        "latitude",
        "longitude",
        "wa_id",
    }
)

# The length of an IBAN in each country of the SWIFT IBAN registry: a candidate is checked at its country's length
# only, so a corrupted IBAN is never accepted by reading a few more characters after it.
IBAN_LENGTHS: Final[Mapping[str, int]] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}  # fmt: skip
# Where an IBAN may begin: a country code and two check digits, not inside a word.
_IBAN_START: Final = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{2})(\d{2})")


class PolicyError(ValueError):
    """A policy file that cannot be used: the message names the file and what is wrong with it."""


def fold(text: str) -> str:
    """``text`` case-folded and without accents (``Offre SPÉCIALE`` → ``offre speciale``), for word matching."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


# A word, for word and phrase matching: what ``\w`` calls one (letters and digits of any script, the underscore).
_WORD: Final = re.compile(r"\w+")


def words_of(text: str) -> tuple[str, ...]:
    """The folded words of ``text``, in order: a phrase matches where its words follow one another."""
    return tuple(_WORD.findall(fold(text)))


def recipient_hash(number: str) -> str:
    """The SHA-256 hex of a phone number's digits (``+33 6 12…`` and ``33612…`` hash alike): how a policy file
    lists the recipients that must never be written to."""
    return hashlib.sha256("".join(c for c in number if c.isdigit()).encode()).hexdigest()


def iban_valid(candidate: str) -> bool:
    """Whether ``candidate`` (no spaces, any case) is an IBAN of its country's length whose mod-97 checksum holds
    (ISO 13616: the first four characters moved to the end, letters as 10-35, the number mod 97 is 1)."""
    iban = candidate.upper()
    if len(iban) != IBAN_LENGTHS.get(iban[:2], -1) or not iban.isascii() or not iban.isalnum():
        return False
    if not (iban[:2].isalpha() and iban[2:4].isdigit()):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def find_ibans(text: str) -> Iterator[str]:
    """The valid IBANs in ``text``, written whole or in groups separated by single spaces."""
    for start in _IBAN_START.finditer(text):
        length = IBAN_LENGTHS.get(start.group(1).upper())
        if length is None:
            continue
        collected: list[str] = []
        count = 0
        position = start.start()
        # Gather the IBAN's characters, single spaces allowed between them, up to its country's length.
        while position < len(text) and count < length:
            char = text[position]
            if char.isascii() and char.isalnum():
                collected.append(char)
                count += 1
            elif not (char == " " and collected and position + 1 < len(text) and text[position + 1] != " "):
                break
            position += 1
        following = text[position] if position < len(text) else " "
        if count == length and not (following.isascii() and following.isalnum()):
            candidate = "".join(collected)
            if iban_valid(candidate):
                yield candidate.upper()


@dataclass(frozen=True, slots=True, kw_only=True)
class Template:
    """What the gateway knows of a template message: its name (from the send), category and text (from the
    template cache, when it has the definition)."""

    name: str | None = None
    category: str | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HoldRule:
    name: str
    # Words and phrases as folded words, matched against a text's words (so on word boundaries by construction):
    # single words by one set intersection, phrases only where a text's word is a phrase's first.
    words: frozenset[str] = frozenset()
    phrases: Mapping[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)
    patterns: tuple[re.Pattern[str], ...] = ()
    iban: bool = False
    template_categories: frozenset[str] = frozenset()
    template_names: frozenset[str] = frozenset()

    def matches(self, texts: Sequence[str], words: Sequence[tuple[str, ...]], template: Template | None) -> bool:
        if (self.words or self.phrases) and any(self._says(w) for w in words):
            return True
        if any(p.search(t) for p in self.patterns for t in texts):
            return True
        if self.iban and any(next(find_ibans(t), None) is not None for t in texts):
            return True
        if template is not None:
            if template.category is not None and template.category.upper() in self.template_categories:
                return True
            if template.name is not None and template.name in self.template_names:
                return True
        return False

    def _says(self, words: tuple[str, ...]) -> bool:
        if not self.words.isdisjoint(words):
            return True
        for i, word in enumerate(words):
            for phrase in self.phrases.get(word, ()):
                if words[i : i + len(phrase)] == phrase:
                    return True
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class RefuseRule:
    name: str
    recipients: frozenset[str]  # SHA-256 hex of the numbers' digits


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What a policy says of one send: refused (to a recipient never written to), held (``rules`` matched) or
    forwarded (neither)."""

    refused: tuple[str, ...] = ()
    held: tuple[str, ...] = ()


FORWARD: Final = Verdict()


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    source: str  # the file it was read from (for messages)
    holds: tuple[HoldRule, ...] = ()
    refusals: tuple[RefuseRule, ...] = ()
    names: frozenset[str] = field(default_factory=frozenset)

    def judge(self, request: Any, template: Template | None = None) -> Verdict:
        """The verdict on a send request (any JSON value: never raises on one)."""
        recipient = _recipient(request)
        if recipient is not None:
            hashed = recipient_hash(recipient)
            refused = tuple(rule.name for rule in self.refusals if hashed in rule.recipients)
            if refused:
                return Verdict(refused=refused)
        texts = visible_texts(request)
        if template is not None and template.text:
            texts.append(template.text)
        words = [words_of(t) for t in texts] if any(rule.words or rule.phrases for rule in self.holds) else []
        held = tuple(rule.name for rule in self.holds if rule.matches(texts, words, template))
        return Verdict(held=held) if held else FORWARD


def _recipient(request: Any) -> str | None:
    if not isinstance(request, dict) or request.get("recipient_type") == "group":
        return None
    to = request.get("to")
    return to if isinstance(to, str) and any(c.isdigit() for c in to) else None


def visible_texts(request: Any) -> list[str]:
    """Every string of a send request a customer would see: every string value except under keys that address,
    identify or configure (:data:`_HIDDEN_KEYS`: ``to``, ``type``, ``id``, ``link``, language ``code``, a button's
    ``payload``, ``context`` …). Iterative, so no JSON value however deep makes it raise."""
    found: list[str] = []
    stack: list[Any] = [request]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if value:
                found.append(value)
        elif isinstance(value, dict):
            stack.extend(v for k, v in value.items() if k not in _HIDDEN_KEYS)
        elif isinstance(value, list):
            stack.extend(value)
    found.reverse()
    return found


class Policies:
    """The policies of every business number: its own file's, else ``default.toml``'s, else none (forwarded)."""

    def __init__(self, by_number: Mapping[str, Policy], default: Policy | None = None) -> None:
        self._by_number = dict(by_number)
        self.default = default

    def for_number(self, phone_number_id: str) -> Policy | None:
        return self._by_number.get(phone_number_id, self.default)

    @property
    def rule_names(self) -> frozenset[str]:
        """Every rule name of every file: the bounded label set of the held-sends metric."""
        policies = [*self._by_number.values(), *([self.default] if self.default is not None else [])]
        return frozenset(name for policy in policies for name in policy.names)

    def __bool__(self) -> bool:
        return bool(self._by_number) or self.default is not None


def _strings(value: Any, where: str, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise PolicyError(f"{where}: {key} must be a list of non-empty strings")
    return [v.strip() for v in value]


def _words_and_phrases(
    entries: Sequence[str], where: str
) -> tuple[frozenset[str], dict[str, tuple[tuple[str, ...], ...]]]:
    """A rule's ``words`` entries folded: the single words, and the phrases by their first word."""
    singles: set[str] = set()
    phrases: dict[str, set[tuple[str, ...]]] = {}
    for entry in entries:
        parts = words_of(entry)
        if not parts:
            raise PolicyError(f"{where}: {entry!r} has no letter or digit to match")
        if len(parts) == 1:
            singles.add(parts[0])
        else:
            phrases.setdefault(parts[0], set()).add(parts)
    return frozenset(singles), {first: tuple(sorted(found)) for first, found in phrases.items()}


HOLD_KEYS: Final = frozenset({"name", "words", "patterns", "iban", "template_categories", "template_names"})
REFUSE_KEYS: Final = frozenset({"name", "recipients_sha256"})


def _name(table: Mapping[str, Any], where: str, seen: set[str]) -> str:
    name = table.get("name")
    if not isinstance(name, str) or not RULE_NAME.fullmatch(name):
        raise PolicyError(f"{where}: name must be 1-63 of a-z, 0-9, '_', '.', '-' (it is a metric label)")
    if name in seen:
        raise PolicyError(f"{where}: the rule name {name!r} is used twice")
    seen.add(name)
    return name


def _hold_rule(table: Any, where: str, seen: set[str]) -> HoldRule:
    if not isinstance(table, dict):
        raise PolicyError(f"{where}: a [[hold]] entry must be a table")
    unknown = sorted(set(table) - HOLD_KEYS)
    if unknown:
        raise PolicyError(f"{where}: unknown keys {', '.join(unknown)} (allowed: {', '.join(sorted(HOLD_KEYS))})")
    name = _name(table, where, seen)
    where = f"{where} ({name})"
    patterns: list[re.Pattern[str]] = []
    for source in _strings(table.get("patterns"), where, "patterns"):
        try:
            patterns.append(re.compile(source, re.IGNORECASE))
        except re.error as exc:
            raise PolicyError(f"{where}: pattern {source!r} is not a regular expression: {exc}") from None
    iban = table.get("iban", False)
    if not isinstance(iban, bool):
        raise PolicyError(f"{where}: iban must be true or false")
    words, phrases = _words_and_phrases(_strings(table.get("words"), where, "words"), where)
    rule = HoldRule(
        name=name,
        words=words,
        phrases=phrases,
        patterns=tuple(patterns),
        iban=iban,
        template_categories=frozenset(
            c.upper() for c in _strings(table.get("template_categories"), where, "template_categories")
        ),
        template_names=frozenset(_strings(table.get("template_names"), where, "template_names")),
    )
    if not (
        rule.words or rule.phrases or rule.patterns or rule.iban or rule.template_categories or rule.template_names
    ):
        raise PolicyError(f"{where}: a rule needs words, patterns, iban, template_categories or template_names")
    return rule


def _refuse_rule(table: Any, where: str, seen: set[str]) -> RefuseRule:
    if not isinstance(table, dict):
        raise PolicyError(f"{where}: a [[refuse]] entry must be a table")
    unknown = sorted(set(table) - REFUSE_KEYS)
    if unknown:
        raise PolicyError(f"{where}: unknown keys {', '.join(unknown)} (allowed: {', '.join(sorted(REFUSE_KEYS))})")
    name = _name(table, where, seen)
    hashes = _strings(table.get("recipients_sha256"), f"{where} ({name})", "recipients_sha256")
    bad = [h for h in hashes if not re.fullmatch(r"[0-9a-f]{64}", h.lower())]
    if bad or not hashes:
        raise PolicyError(
            f"{where} ({name}): recipients_sha256 must list SHA-256 hex digests of the numbers' digits"
            " (python -m services.gateway.policy hash <number>), never the numbers themselves"
        )
    return RefuseRule(name=name, recipients=frozenset(h.lower() for h in hashes))


def parse_policy(text: str, source: str) -> Policy:
    """A policy from a TOML file's text; PolicyError naming ``source`` when it is malformed."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{source}: not TOML: {exc}") from None
    unknown = sorted(set(document) - {"hold", "refuse"})
    if unknown:
        raise PolicyError(f"{source}: unknown tables {', '.join(unknown)} (allowed: [[hold]], [[refuse]])")
    holds_raw, refuse_raw = document.get("hold", []), document.get("refuse", [])
    if not isinstance(holds_raw, list) or not isinstance(refuse_raw, list):
        raise PolicyError(f"{source}: write the rules as [[hold]] and [[refuse]] tables")
    if len(holds_raw) + len(refuse_raw) > MAX_RULES:
        raise PolicyError(f"{source}: more than {MAX_RULES} rules")
    seen: set[str] = set()
    holds = tuple(_hold_rule(t, f"{source} [[hold]] #{i + 1}", seen) for i, t in enumerate(holds_raw))
    refusals = tuple(_refuse_rule(t, f"{source} [[refuse]] #{i + 1}", seen) for i, t in enumerate(refuse_raw))
    return Policy(source=source, holds=holds, refusals=refusals, names=frozenset(seen))


def load_policies(directory: Path) -> Policies:
    """Every ``*.toml`` of ``directory``: ``<phone_number_id>.toml`` and ``default.toml``. PolicyError when the
    folder is missing, a file name is neither, or a file is malformed."""
    if not directory.is_dir():
        raise PolicyError(f"{directory}: the policy folder does not exist")
    by_number: dict[str, Policy] = {}
    default: Policy | None = None
    for path in sorted(directory.glob("*.toml")):
        policy = parse_policy(path.read_text(encoding="utf-8"), path.name)
        if path.name == DEFAULT_FILE:
            default = policy
        elif path.stem.isdigit():
            by_number[path.stem] = policy
        else:
            raise PolicyError(f"{path.name}: a policy file is named <phone_number_id>.toml or {DEFAULT_FILE}")
    return Policies(by_number, default)


def main(argv: Sequence[str]) -> int:
    """``python -m services.gateway.policy hash NUMBER…``: the digests to list in ``recipients_sha256``;
    ``python -m services.gateway.policy check DIR``: load a policy folder as the gateway does."""
    if len(argv) >= 2 and argv[0] == "hash":
        for number in argv[1:]:
            print(recipient_hash(number))
        return 0
    if len(argv) == 2 and argv[0] == "check":
        try:
            policies = load_policies(Path(argv[1]))
        except PolicyError as exc:
            print(f"invalid policy: {exc}", file=sys.stderr)
            return 2
        print(f"policies valid; rules: {', '.join(sorted(policies.rule_names)) or 'none'}")
        return 0
    print("usage: python -m services.gateway.policy hash NUMBER… | check DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
