"""Retention policy files: the ``anchor`` of a class (event time or last contact), and the index rows it marks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.core.container import RecordMeta
from services.core.index import index_row
from services.core.policy import Classifier, PolicyError, parse_policy


def document(**prospects: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "default_class": "standard",
        "categories": {"111": "sales"},
        "classes": [
            {"name": "prospects", "keep_for": "3y", "match": {"category": ["sales"]}, **prospects},
            {"name": "standard", "keep_for": "7y"},
        ],
    }


def test_the_anchor_defaults_to_the_event_time() -> None:
    policy = parse_policy(document())
    assert [c.anchor for c in policy.classes] == ["event_time", "event_time"]
    assert Classifier(policy).last_contact_classes == frozenset()


def test_a_class_anchored_on_the_last_contact_is_known_to_the_classifier() -> None:
    policy = parse_policy(document(anchor="last_contact"))
    assert policy.by_name("prospects").anchor == "last_contact"
    assert Classifier(policy).last_contact_classes == frozenset({"prospects"})


@pytest.mark.parametrize("anchor", ["last_message", "", 3, None])
def test_an_unknown_anchor_is_refused_with_the_class_named(anchor: Any) -> None:
    with pytest.raises(PolicyError, match="class 'prospects': anchor must be one of"):
        parse_policy(document(anchor=anchor))


def meta(phone_number_id: str) -> RecordMeta:
    return RecordMeta(
        event_id="0" * 32,
        subject_ref="a" * 64,
        alias_refs=(),
        dek_id="00000000-0000-0000-0000-000000000000",
        kind="message",
        type="text",
        timestamp=1_700_000_000,
        received_at="2023-11-14T22:13:20.000Z",
        waba_id="9",
        phone_number_id=phone_number_id,
        message_ref=None,
        original_message_ref=None,
        offset=1,
    )


def test_index_rows_of_a_last_contact_class_are_marked_with_the_expiry_of_their_own_time() -> None:
    classify = Classifier(parse_policy(document(anchor="last_contact")))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    sales = index_row(meta("111"), object_key="k", record_index=0, partition=0, classify=classify, now=now)
    other = index_row(meta("222"), object_key="k", record_index=1, partition=0, classify=classify, now=now)
    when = datetime.fromtimestamp(1_700_000_000, UTC)
    assert (sales.retention_class, sales.anchor_last_contact, sales.expires_at) == (
        "prospects",
        True,
        when + timedelta(days=3 * 365),
    )
    assert (other.retention_class, other.anchor_last_contact) == ("standard", False)


def test_a_class_can_match_group_or_one_to_one_conversations() -> None:
    policy = parse_policy(
        {
            "version": 1,
            "default_class": "standard",
            "classes": [
                {"name": "groups", "keep_for": "1y", "match": {"conversation": ["group"]}},
                {"name": "standard", "keep_for": "7y"},
            ],
        }
    )
    classify = Classifier(policy)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    in_group = index_row(
        meta("111"), object_key="k", record_index=0, partition=0, classify=classify, now=now, group_ref=b"g" * 32
    )
    alone = index_row(meta("111"), object_key="k", record_index=1, partition=0, classify=classify, now=now)
    assert (in_group.retention_class, alone.retention_class) == ("groups", "standard")
    assert in_group.expires_at == datetime.fromtimestamp(1_700_000_000, UTC) + timedelta(days=365)
    with pytest.raises(PolicyError, match=r"match\.conversation must be among"):
        parse_policy(
            {
                "version": 1,
                "default_class": "standard",
                "classes": [{"name": "standard", "keep_for": "7y", "match": {"conversation": ["groups"]}}],
            }
        )
