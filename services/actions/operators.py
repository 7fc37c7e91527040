"""Who acts and what they may do: the operator, the actions' names and the role each needs. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from services.core.refusals import Forbidden
from services.core.vocabulary import ROLES, Role

ActionName = Literal[
    "messages",
    "group.messages",
    "media",
    "search",
    "export",
    "export.search",
    "erase",
    "erasures",
    "erasure.refuse",
    "erasure.extend",
    "hold.create",
    "hold.list",
    "hold.release",
    "retention.run",
    "audit",
    "rebuild-index",
    "keys.status",
    "keys.rewrap",
    "recover",
    "verify",
    "chain.checkpoint",
    "chain.baseline",
    "case.open",
    "case.close",
    "case.assign",
    "case.custodian",
    "case.list",
    "case.review",
    "approval.list",
    "approval.decide",
    "send.release",
]

ROLE_RANK: Final[dict[Role, int]] = {role: rank for rank, role in enumerate(ROLES, start=1)}
# ``reader`` may search and retrieve (with a reason, audited); everything else is the data protection officer's.
REQUIRED_ROLE: Final[dict[ActionName, Role]] = {
    "messages": "reader",
    "group.messages": "reader",
    "media": "reader",
    "search": "reader",
    "export": "dpo",
    # A search result, within the reader's own scope (the cases assigned to them): what they may read, they may
    # hand over, with a reason, audited, above the four-eyes threshold only once a DPO approves. Following one's
    # own export jobs and downloading their files needs the same role (a DPO sees everyone's).
    "export.search": "reader",
    "erase": "dpo",
    "erasures": "dpo",
    "erasure.refuse": "dpo",
    "erasure.extend": "dpo",
    "hold.create": "dpo",
    "hold.list": "dpo",
    "hold.release": "dpo",
    "retention.run": "dpo",
    "audit": "dpo",
    "rebuild-index": "dpo",
    "keys.status": "dpo",
    "keys.rewrap": "dpo",
    "recover": "dpo",
    "verify": "dpo",
    "chain.checkpoint": "dpo",
    "chain.baseline": "dpo",
    # Cases: the DPO opens, closes, assigns and names custodians; a reader sees and reviews (tags, notes, saved
    # searches) only the cases they are assigned to (services/actions/cases.py checks the assignment).
    "case.open": "dpo",
    "case.close": "dpo",
    "case.assign": "dpo",
    "case.custodian": "dpo",
    "case.list": "reader",
    "case.review": "reader",
    # Everyone's requests, decided or not (four eyes: services/actions/approvals.py). Who may request and approve
    # is each request kind's.
    "approval.list": "dpo",
    # Deciding, and seeing what waits for one's decision: the lowest role here, each request kind's approver role
    # in the action (a kind a reader may approve is possible).
    "approval.decide": "reader",
    # A held message's release to the customer (services/actions/held_sends.py): the archiver opens its request
    # (nobody requests it by hand); the kind's approver is a DPO.
    "send.release": "dpo",
}

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Operator:
    """Who acts: ``name`` is what the audit log records as the actor."""

    name: str
    role: Role


# The retention service's own schedule: it runs retention, nothing else.
SCHEDULER: Final = Operator("scheduler", "dpo")


def authorize(operator: Operator, action: ActionName) -> None:
    """Raise :class:`Forbidden` unless the operator's role allows ``action``."""
    needed = REQUIRED_ROLE[action]
    if ROLE_RANK[operator.role] < ROLE_RANK[needed]:
        raise Forbidden(f"the {needed!r} role is required")
