"""Keyword search over the blind index, against the real stack: words of the messages find the people who wrote
them, case and accents ignored, all words required; the database holds tokens, never the words; the tokens go with
the person's erasure; the search is audited without its words.
"""

from __future__ import annotations

import uuid

import asyncpg
import orjson
import pytest

from devtools import pipeline
from devtools.pipeline import Person
from services.actions.layer import Operator
from services.core.identity import resolve_subject_refs
from services.core.index import binary_keys
from services.review.search import SearchFilter
from tests.helpers.action_stack import READER, Stack
from tests.helpers.approvals import ERASE_WHY, REQUESTER, approved
from tests.helpers.archive_runs import NOW, archive
from tests.helpers.support import run_cli

pytestmark = pytest.mark.integration

DPO_OPERATOR = Operator(f"dpo-keywords-{uuid.uuid4().hex[:8]}", "dpo")  # this run's audit rows only


async def people(stack: Stack, pool: asyncpg.Pool, query: str, number: str) -> set[str]:
    hits = await stack.actions.search(DPO_OPERATOR, SearchFilter(phone_number_id=number, keywords=query))
    return {hit.subject_ref for hit in hits if hit.subject_ref}


async def test_words_of_the_messages_find_who_wrote_them_and_nothing_else(
    stack: Stack, demo_env: dict[str, str], pg_pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    customer = Person.fresh()
    other = Person(customer.waba_id, customer.phone_number_id, "1" + pipeline.digits(10))
    number = customer.phone_number_id
    await archive(
        demo_env,
        pg_pool,
        stack.settings.s3.prefix,
        [
            pipeline.text_message(customer, "wamid.K1", "Je confirme le remboursement de la commande 4711", NOW - 60),
            pipeline.image(
                customer,
                f"wamid.{uuid.uuid4().hex}",
                NOW - 50,
                id=uuid.uuid4().hex,
                mime_type="image/jpeg",
                caption="Facture Électricité de mars",
            ),
            pipeline.text_message(other, "wamid.K2", "Bonjour, où est ma commande ?", NOW - 40),
            pipeline.status(other, "wamid.K2", "read", NOW - 30),
        ],
    )
    pepper = stack.actions.access.pepper
    (mine,) = await resolve_subject_refs(pg_pool, pepper, customer.wa_id, number)
    (theirs,) = await resolve_subject_refs(pg_pool, pepper, other.wa_id, number)

    assert await people(stack, pg_pool, "remboursement", number) == {mine}
    assert await people(stack, pg_pool, "ELECTRICITE", number) == {mine}  # case and accents ignored
    assert await people(stack, pg_pool, "électricité", number) == {mine}
    assert await people(stack, pg_pool, "commande", number) == {mine, theirs}
    assert await people(stack, pg_pool, "remboursement commande", number) == {mine}  # every word
    assert await people(stack, pg_pool, "remboursement bonjour", number) == set()  # not in one person's messages
    assert await people(stack, pg_pool, "xyzzy", number) == set()
    assert await people(stack, pg_pool, "à", number) == set()  # no searchable word at all
    # Candidates are messages, never statuses.
    hits = await stack.actions.search(DPO_OPERATOR, SearchFilter(phone_number_id=number, keywords="commande"))
    assert {hit.kind for hit in hits} == {"message"}

    # Through the API, with the words in the body; a reader (reviewing the number's case) may search, nobody
    # anonymous.
    await stack.cases.cover("test-reader", phone_number_id=number)
    answer = await stack.api.post(
        "/v1/search", json={"phone_number_id": number, "keywords": "Remboursement"}, headers=READER
    )
    assert answer.status_code == 200, answer.text
    assert {hit["subject_ref"] for hit in answer.json()} == {mine}
    assert (await stack.api.post("/v1/search", json={"keywords": "remboursement"})).status_code == 401

    # The database holds tokens, never the words; the audit log says how many words, not which.
    stored = await pg_pool.fetch(
        "SELECT tokens::text AS t FROM keyword_index WHERE subject_ref = $1", binary_keys([mine])[0]
    )
    assert stored
    assert all("rembours" not in row["t"] and "commande" not in row["t"] for row in stored)
    audit = await pg_pool.fetch(
        "SELECT details::text AS d FROM audit_log WHERE actor = $1 AND action = 'search' ORDER BY audit_id",
        DPO_OPERATOR.name,
    )
    assert audit
    assert all("rembours" not in row["d"] and "lectricit" not in row["d"] for row in audit)
    assert '"keywords": 2' in audit[4]["d"] or '"keywords":2' in audit[4]["d"]

    # A hit opens with a reason: by its pseudonym, the decrypted conversation says which message matched.
    opened = await stack.api.post(
        "/v1/messages", json={"subject_ref": mine, "reason": "complaint 77: find the refund"}, headers=READER
    )
    assert opened.status_code == 200, opened.text
    texts = [m["payload"].get("text", {}).get("body") for m in opened.json()["messages"]]
    assert "Je confirme le remboursement de la commande 4711" in texts
    assert (
        await pg_pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE subject_ref = $1 AND reason = 'complaint 77: find the refund'", mine
        )
        == 1
    )
    for wrong in ({"reason": "no person"}, {"subject_ref": mine, "contact": customer.wa_id, "reason": "both"}):
        assert (await stack.api.post("/v1/messages", json=wrong, headers=READER)).status_code == 400
    bad = await stack.api.post("/v1/messages", json={"subject_ref": "not-hex", "reason": "x y z"}, headers=READER)
    assert bad.status_code == 422
    # The same from the CLI: search by words, open by the pseudonym it printed.
    code, out, err = await run_cli(["search", "--phone-number-id", number, "--keywords", "REMBOURSEMENT"], capsys)
    assert code == 0, err
    assert {orjson.loads(line)["subject_ref"] for line in out.splitlines()} == {mine}
    code, out, err = await run_cli(
        ["messages", "--subject-ref", mine, "--reason", "complaint 77", "--format", "jsonl"], capsys
    )
    assert code == 0, err
    assert "remboursement" in out
    code, _out, err = await run_cli(["messages", "--subject-ref", "not-hex", "--reason", "complaint 77"], capsys)
    assert code == 2
    assert "64 lowercase hex" in err

    # Erased with the person: their words are no longer searchable; the other person's still are.
    done = await approved(
        stack.actions,
        stack.actions.request_erasure(
            REQUESTER, contact=customer.wa_id, request_ref=f"GDPR-{uuid.uuid4().hex[:8]}", reason=ERASE_WHY
        ),
        approver=DPO_OPERATOR,
    )
    assert done.status == "completed"
    assert (
        await pg_pool.fetchval("SELECT count(*) FROM keyword_index WHERE subject_ref = $1", binary_keys([mine])[0]) == 0
    )
    assert await people(stack, pg_pool, "remboursement", number) == set()
    assert await people(stack, pg_pool, "commande", number) == {theirs}
