"""A WhatsApp group as Meta reports it: its lifecycle, participants and messages, with fresh ids."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from devtools import pipeline
from devtools.pipeline import Person
from services.core.events import Event
from services.core.pseudonym import subject_ref
from services.core.vocabulary import rfc3339_millis
from services.ingest.outbound import outbound_event
from tests.helpers.archive_runs import NOW

T0 = NOW - 3600


@dataclass(frozen=True)
class Group:
    """A business number, its group and three participants (fresh ids: nothing collides with other runs)."""

    business: Person
    group_id: str
    alice: str
    bob: str
    chloe: str

    @classmethod
    def fresh(cls) -> Group:
        business = Person.fresh()
        group_id = f"Y2FwaV9ncm91cDo{uuid.uuid4().hex}"
        return cls(business, group_id, *("1" + pipeline.digits(10) for _ in range(3)))

    def change(self, field: str, **item: Any) -> bytes:
        """One ``value.groups[]`` item of a group field, as Meta sends it."""
        return pipeline.envelope(self.business, field, {"groups": [{"group_id": self.group_id, **item}]})

    def message(self, sender: str, wamid: str, body: str, ts: int) -> bytes:
        """A participant's text in the group (Meta's group messages webhook: ``group_id`` beside ``from``)."""
        return pipeline.envelope(
            self.business,
            "messages",
            {
                "contacts": [{"profile": {"name": f"Participant {sender[-4:]}"}, "wa_id": sender}],
                "messages": [
                    {
                        "from": sender,
                        "group_id": self.group_id,
                        "id": wamid,
                        "timestamp": str(ts),
                        "text": {"body": body},
                        "type": "text",
                    }
                ],
            },
        )

    def webhooks(self) -> list[bytes]:
        joined = {"type": "group_participants_add", "reason": "invite_link"}
        return [
            self.change(
                "group_lifecycle_update",
                timestamp=str(T0),
                type="group_create",
                request_id="req-create",
                subject="Spring order",
                invite_link="https://chat.whatsapp.com/Ex4mpleInv1teL1nk",
                join_approval_mode="auto_approve",
            ),
            *(
                self.change(
                    "group_participants_update", timestamp=str(T0 + n), added_participants=[{"wa_id": who}], **joined
                )
                for n, who in ((10, self.alice), (20, self.bob), (30, self.chloe))
            ),
            self.message(self.alice, "wamid.GA1", "hello all, is the order ready", T0 + 40),
            self.message(self.bob, "wamid.GB1", "mine is paid already", T0 + 50),
            # T0 + 55: the business writes to the group through the API (an outbound report, below) and Chloe reads it.
            pipeline.envelope(
                self.business,
                "messages",
                {
                    "statuses": [
                        {
                            "id": "wamid.GOUT1",
                            "status": "read",
                            "timestamp": str(T0 + 57),
                            "recipient_id": self.group_id,
                            "recipient_type": "group",
                            "recipient_participant_id": self.chloe,
                        }
                    ]
                },
            ),
            self.message(self.chloe, "wamid.GC1", "I will pass this time", T0 + 60),
            self.change(
                "group_settings_update",
                timestamp=str(T0 + 70),
                type="group_settings_update",
                request_id="req-settings",
                group_subject={"text": "Spring order (closed)", "update_successful": True},
            ),
            self.change(
                "group_participants_update",
                timestamp=str(T0 + 80),
                type="group_participants_remove",
                request_id="req-remove",
                removed_participants=[{"input": self.bob}],
                initiated_by="business",
            ),
            self.change(
                "group_participants_update",
                timestamp=str(T0 + 90),
                type="group_participants_remove",
                removed_participants=[{"wa_id": self.chloe}],
                initiated_by="participant",
            ),
            self.message(self.alice, "wamid.GA2", "thanks, see you", T0 + 100),
        ]

    def outbound(self) -> Event:
        """What the business's own system reports having sent to the group (at T0 + 55)."""
        report = {
            "phone_number_id": self.business.phone_number_id,
            "waba_id": self.business.waba_id,
            "request": {
                "messaging_product": "whatsapp",
                "recipient_type": "group",
                "to": self.group_id,
                "type": "text",
                "text": {"body": "your orders ship on Monday"},
            },
            "response": {"messaging_product": "whatsapp", "messages": [{"id": "wamid.GOUT1"}]},
        }
        sent_at = rfc3339_millis(datetime.fromtimestamp(T0 + 55, UTC))
        return outbound_event(orjson.dumps(report), received_at=sent_at)

    def ref(self, pepper: bytes, person: str) -> str:
        """The pseudonym of a participant (or of the business: BUSINESS_SUBJECT) under the group's number."""
        return subject_ref(pepper, self.business.phone_number_id, person)
