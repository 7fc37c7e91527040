"""Messages held before sending (issue 27 item 2), the pure part: what a ``send_held`` event asks for, and the
decision record the gateway waits for.

The send gateway journals a send that one of its policy rules matched as a ``send_held`` event instead of
forwarding it (services/gateway/records.py, docs/ARCHIVE_FORMAT.md). The archiver archives it under the person and
opens a four-eyes request of kind ``send`` for it (services/actions/held_sends.py); the request's target is
:meth:`HeldSend.target`: references only (the send's and the gateway's ids, the business number, the person's
pseudonym, the event's id, the rules' names), never the message. When the request is approved, rejected or expires,
a :func:`decision_record` goes to the gateway on ``wa.gateway.decisions.v1`` (keyed by the business number).

Everything here is pure: :func:`held_send_of` reads an event (or says why it cannot, :class:`InvalidHeldSend`),
:func:`decision_record` builds the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeAlias, get_args

import orjson

from services.core.events import Event

# The request kind of a held send (services/actions/approvals.py registry).
SEND_KIND: Final = "send"
# What became of a held send: what the decision record says to the gateway.
Decision: TypeAlias = Literal["approved", "rejected", "expired"]
DECISIONS: Final[tuple[Decision, ...]] = get_args(Decision)
DECISION_RECORD_VERSION: Final = 1
# A rule's name reaches audit rows and the console: a name, not a text (the policy files name their rules).
RULE_NAME_MAX: Final = 100
RULES_MAX: Final = 50
# The author is an agent's username from a request header: bounded like a console account name.
AUTHOR_MAX: Final = 200


class InvalidHeldSend(ValueError):
    """A ``send_held`` event that does not say what the interface says it must (its message is the reason, with
    no value of the event in it): the event is archived all the same, and no request is opened."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldSend:
    """One held send, as its ``send_held`` event says: the gateway's ids (``send_id``, ``message_id``: the
    ``wamid.…`` the gateway answered the company), the business, the person's pseudonym (``subject_ref``, the one
    the event is sealed under), the archived event's id, the rules that matched, who wrote it (``author``: the
    sending agent, or None) and until when it may be sent (``held_until``: the request's expiry)."""

    send_id: str
    message_id: str
    phone_number_id: str
    waba_id: str
    event_id: str
    subject_ref: str | None
    rules: tuple[str, ...]
    author: str | None
    held_until: datetime

    @property
    def requester(self) -> str:
        """Who asked for the send, as the request names them: the author, else the business number's gateway (a
        company system sent it without naming a person)."""
        return self.author or f"gateway:{self.phone_number_id}"

    def target(self) -> dict[str, Any]:
        """The request's target: references only (no phone number, no text of the message)."""
        return {
            "send_id": self.send_id,
            "message_id": self.message_id,
            "phone_number_id": self.phone_number_id,
            "waba_id": self.waba_id,
            "subject_ref": self.subject_ref,
            "event_id": self.event_id,
            "rules": list(self.rules),
        }


def _text(value: Any, what: str, *, limit: int = 200) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidHeldSend(f"{what} is not a non-empty string")
    if len(value) > limit:
        raise InvalidHeldSend(f"{what} is longer than {limit} characters")
    return value


def held_send_of(event: Event, subject_ref: str | None) -> HeldSend:
    """The held send of a ``send_held`` event sealed under ``subject_ref``; :class:`InvalidHeldSend` when the event
    is of another kind or lacks a field of the interface (``gateway.send_id``, ``message_id``, ``rules``,
    ``held_until`` as an ISO-8601 time with a zone; ``author`` a string or absent)."""
    if event.kind != "send_held":
        raise InvalidHeldSend(f"an event of kind {event.kind!r} is not a held send")
    payload = event.payload if isinstance(event.payload, dict) else {}
    gateway = payload.get("gateway")
    if not isinstance(gateway, dict):
        raise InvalidHeldSend("the event has no 'gateway' object")
    if not event.phone_number_id:
        raise InvalidHeldSend("the event names no business number")
    rules = gateway.get("rules")
    if not isinstance(rules, list) or len(rules) > RULES_MAX:
        raise InvalidHeldSend(f"'gateway.rules' is not a list of at most {RULES_MAX} names")
    names = tuple(_text(rule, "a rule's name", limit=RULE_NAME_MAX) for rule in rules)
    author = gateway.get("author")
    if author is not None:
        author = _text(author, "'gateway.author'", limit=AUTHOR_MAX).strip()
    held = _text(gateway.get("held_until"), "'gateway.held_until'", limit=64)
    try:
        held_until = datetime.fromisoformat(held)
    except ValueError:
        raise InvalidHeldSend("'gateway.held_until' is not an ISO-8601 time") from None
    if held_until.tzinfo is None:
        raise InvalidHeldSend("'gateway.held_until' has no time zone")
    return HeldSend(
        send_id=_text(gateway.get("send_id"), "'gateway.send_id'"),
        message_id=_text(gateway.get("message_id"), "'gateway.message_id'"),
        phone_number_id=event.phone_number_id,
        waba_id=event.waba_id,
        event_id=event.event_id,
        subject_ref=subject_ref,
        rules=names,
        author=author,
        held_until=held_until.astimezone(UTC),
    )


def decision_record(
    target: Mapping[str, Any],
    *,
    decision: Decision,
    request_id: str,
    decided_at: datetime,
    reason: str | None = None,
    request: Any = None,
) -> dict[str, Any]:
    """The record the gateway consumes (docs/asyncapi.yaml, channel ``gatewayDecisions``): the send's ids from the
    request's ``target``, the decision, the rejection's ``reason`` (rejected only: it reaches the company's systems
    in the ``failed`` status), the send body ``request`` (approved only: what the gateway sends), the request's id
    and when it was decided. ValueError for an approval without a body, or a body or reason with the wrong
    decision."""
    if (decision == "approved") != (request is not None):
        raise ValueError("the send body goes with an approval, and only with one")
    if reason is not None and decision != "rejected":
        raise ValueError("a reason goes with a rejection only")
    return {
        "version": DECISION_RECORD_VERSION,
        "send_id": target["send_id"],
        "message_id": target["message_id"],
        "phone_number_id": target["phone_number_id"],
        "waba_id": target["waba_id"],
        "decision": decision,
        "reason": reason,
        "request": request if decision == "approved" else None,
        "request_id": request_id,
        "decided_at": decided_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }


def record_bytes(record: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) of a decision record on the topic: keyed by the business number, so that one number's
    decisions keep their order."""
    return str(record["phone_number_id"]).encode(), orjson.dumps(dict(record))
