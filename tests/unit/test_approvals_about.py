"""The console's "About" column (services/console/routers/approvals.py ``about``): what a request is about in words
a person reads, never its raw references (a hold's uuid, a request's target as a dict)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.actions.approvals import ApprovalRequest
from services.console.i18n import translator
from services.console.routers.approvals import about
from services.governance.holds import Hold

NOW = datetime(2026, 12, 7, tzinfo=UTC)
HOLD_ID = "0b6c3f9e-6c1e-4a55-9d43-4f1b2c3d4e5f"
HOLD = Hold(
    hold_id=HOLD_ID,
    case_ref="CASE-2026-014",
    scope="conversation",
    waba_id=None,
    phone_number_id=None,
    subject_count=1,
    created_by="dpo.alice",
    created_at=NOW,
    released_at=None,
)


def request(kind: str, target: dict[str, Any]) -> ApprovalRequest:
    return ApprovalRequest(
        request_id="r",
        kind=kind,
        target=target,
        subject_ref=None,
        reason="why",
        requested_by="a",
        requested_at=NOW,
        expires_at=NOW,
        status="pending",
        decided_by=None,
        decided_at=None,
        decision=None,
        outcome=None,
    )


@pytest.mark.parametrize(
    ("locale", "kind", "target", "shown"),
    [
        pytest.param(
            "en",
            "erase",
            {"subject_refs": ["a" * 64, "b" * 64], "request_ref": "GDPR-7", "phone_number_id": None},
            "One person (2 pseudonyms), their request GDPR-7",
            id="erasure",
        ),
        pytest.param(
            "en",
            "hold.release",
            {"hold_id": HOLD_ID},
            "The legal hold of case CASE-2026-014 on a conversation",
            id="hold",
        ),
        pytest.param(
            "en", "hold.release", {"hold_id": "gone"}, "A legal hold that is no longer active", id="hold gone"
        ),
        pytest.param("fr", "case.close", {"case_ref": "CASE-2026-014"}, "Dossier CASE-2026-014", id="case in French"),
        pytest.param(
            "en",
            "export",
            {"subject_refs": ["a" * 64], "messages": 1500, "formats": ["json", "pdf"]},
            "1,500 messages of 1 person(s), as json, pdf",
            id="large export",
        ),
        pytest.param(
            "fr",
            "send",
            {"send_id": "s", "rules": ["refund-amount", "iban"]},
            "Un message à un client, retenu par les règles : refund-amount, iban",
            id="held message in French",
        ),
    ],
)
def test_about_says_what_a_request_is_about(locale: str, kind: str, target: dict[str, Any], shown: str) -> None:
    assert about(translator(locale), request(kind, target), {HOLD_ID: HOLD}) == shown
