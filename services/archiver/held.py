"""Held messages in the archiver: each ``send_held`` event archived opens its four-eyes request of kind ``send``
(services/actions/held_sends.py), in the transaction that indexes the event, so that the request exists exactly
when the draft it refers to is archived.

Once per send: the request's ``source_ref`` is the send's id, and a replayed event (a batch written again after a
restart, a topic replayed) finds it and opens nothing. An event that does not say what the interface says
(services/governance/held_sends.py :class:`InvalidHeldSend`) is archived all the same and opens nothing: a
warning names its event id and the reason, never a value of the event.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from services.core.audit import write_audit
from services.core.db import Connection
from services.core.events import Event
from services.core.keyring import Keyring
from services.governance.approvals import open_sourced_request
from services.governance.held_sends import SEND_KIND, HeldSend, InvalidHeldSend, held_send_of

log = logging.getLogger("wa_archive.archiver")


def held_reason(held: HeldSend) -> str:
    """The request's reason (sealed with it like any): the names of the rules that held it, no text of it."""
    return "held by the send gateway's rules: " + (", ".join(held.rules) or "(none named)")


def held_sends_of(events: Sequence[tuple[Event, str | None]]) -> list[HeldSend]:
    """The held sends among ``events`` (each with the pseudonym it is sealed under, None for no person); the
    invalid ones are logged and left out."""
    found = []
    for event, subject_ref in events:
        if event.kind != "send_held":
            continue
        try:
            found.append(held_send_of(event, subject_ref))
        except InvalidHeldSend as exc:
            log.warning("held send %s archived without an approval request: %s", event.event_id, exc)
    return found


async def open_held_requests(conn: Connection, keyring: Keyring, held_sends: Sequence[HeldSend]) -> int:
    """Open the request of each held send that has none yet (audited ``approval.requested`` in the requester's
    name, as an operator's request is); how many were opened. ``conn`` is the index transaction's."""
    opened = 0
    for held in held_sends:
        request = await open_sourced_request(
            conn,
            keyring,
            kind=SEND_KIND,
            source_ref=held.send_id,
            target=held.target(),
            subject_refs=[held.subject_ref] if held.subject_ref else [],
            reason=held_reason(held),
            requested_by=held.requester,
            expires_at=held.held_until,
        )
        if request is None:
            continue  # a replay: the request of this send exists
        opened += 1
        await write_audit(
            conn,
            actor=held.requester,
            action="approval.requested",
            reason=None,
            subject_ref=request.subject_ref,
            details={
                "request_id": request.request_id,
                "kind": SEND_KIND,
                "target": held.target(),
                "expires_at": request.expires_at.isoformat(),
                "opened_by": "archiver",
            },
        )
    return opened
