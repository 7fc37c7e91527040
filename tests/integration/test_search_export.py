"""Exports of a search result against the real stack (services/actions/exporting.py queue_search_export).

Two people write to one business number; both mention a refund. The DPO's keyword search finds both; a reader
whose case names one of them finds only that one's, and their export holds exactly those records (with the records
that change them: the deletion of the refund message), nothing of the other person's. The signed bag of the DPO's
export verifies, says its scope is a search and names it without its words; its RSMF validates against the
vendored schema. Nothing of the words reaches the job's row or the audit log.
"""

from __future__ import annotations

import email
import io
import json
import time
import uuid
import zipfile
from email.policy import default
from pathlib import Path

import asyncpg
import jsonschema
import orjson
import pytest

from devtools import pipeline
from devtools.pipeline import Person
from services.actions.layer import Operator
from services.core.identity import resolve_subject_refs
from services.core.refusals import InvalidRequest
from services.evidence.bag import load_private_key, verify_bag
from services.evidence.jobs import ExportJob
from services.evidence.rsmf import manifest_schema
from services.governance.scope import OutsideScope
from services.review.search import SearchFilter
from tests.helpers.action_stack import Stack
from tests.helpers.archive_runs import archive, crisis_bodies
from tests.helpers.export_jobs import admin_work_bucket, fail_leftover_jobs

pytestmark = pytest.mark.integration

REASON = "dispute 88: what was promised"


async def run_job(stack: Stack, queued: ExportJob, **kwargs: object) -> ExportJob:
    """Run the worker until it has run ``queued`` (the shared database may hold another test's job first)."""
    for _ in range(5):
        ran = await stack.actions.run_next_export(ttl_s=600, stale_s=300, **kwargs)  # type: ignore[arg-type]
        if ran is not None and ran.job_id == queued.job_id:
            return ran
    raise AssertionError("the job was not run")


async def downloaded(stack: Stack, operator: Operator, job: ExportJob, name: str) -> bytes:
    _file, pieces = await stack.actions.export_file(operator, job.job_id, name)
    return b"".join([piece async for piece in pieces])


async def first_ref(pool: asyncpg.Pool, pepper: bytes, person: Person) -> str:
    refs = await resolve_subject_refs(pool, pepper, person.wa_id, person.phone_number_id)
    return refs[0]


@pytest.fixture
async def two_people(stack: Stack, demo_env: dict[str, str], pg_pool: asyncpg.Pool) -> tuple[Person, Person]:
    """Alice's crisis (her refund message deleted, edits, an echo) and Bob's refund message, on one number."""
    await fail_leftover_jobs(pg_pool)
    stack.actions.access.work = admin_work_bucket(demo_env)
    alice = Person.fresh()
    bob = Person(alice.waba_id, alice.phone_number_id, "1" + uuid.uuid4().int.__str__()[:10])
    bodies = [
        *crisis_bodies(alice),
        pipeline.text_message(bob, f"wamid.{uuid.uuid4().hex}", "where is my refund bob", int(time.time()) - 600),
    ]
    await archive(demo_env, pg_pool, stack.settings.s3.prefix, bodies)
    return alice, bob


async def test_a_readers_search_export_holds_exactly_what_their_search_shows(
    stack: Stack, two_people: tuple[Person, Person], pg_pool: asyncpg.Pool
) -> None:
    alice, bob = two_people
    actions = stack.actions
    pepper = actions.access.pepper
    alice_ref, bob_ref = await first_ref(pg_pool, pepper, alice), await first_ref(pg_pool, pepper, bob)
    query = SearchFilter(keywords="refund", phone_number_id=alice.phone_number_id)

    dpo = Operator(f"test-dpo-{uuid.uuid4().hex[:6]}", "dpo")
    assert {hit.subject_ref for hit in await actions.search(dpo, query)} == {alice_ref, bob_ref}

    reader = Operator(f"test-reader-{uuid.uuid4().hex[:6]}", "reader")
    case_ref = await stack.cases.cover(reader.name, subject_ref=alice_ref)
    seen = await actions.search(reader, query)
    assert {hit.subject_ref for hit in seen} == {alice_ref}
    queued = await actions.queue_search_export(reader, query=query, reason=REASON, formats=["jsonl"])
    assert isinstance(queued, ExportJob)
    assert (queued.scope, queued.subject_ref, queued.requester_role) == ("search", None, "reader")
    assert set(queued.event_ids) == {hit.event_id for hit in seen}
    assert queued.selection is not None
    assert (queued.selection["keywords"], queued.selection["cases"]) == (1, [case_ref])

    # Nothing of the words in the job's row or the audit log; the request names the search by its description.
    row = await pg_pool.fetchval(
        "SELECT row_to_json(j)::text FROM export_jobs j WHERE job_id = $1::uuid", queued.job_id
    )
    requested = await pg_pool.fetchval(
        "SELECT row_to_json(a)::text FROM audit_log a WHERE action = 'export.requested' AND details->>'job_id' = $1",
        queued.job_id,
    )
    assert "refund" not in row
    assert "refund" not in requested
    assert orjson.loads(requested)["details"]["search"]["query"] == queued.selection["query"]

    ran = await run_job(stack, queued)
    assert (ran.status, ran.error) == ("done", None), ran.error
    (records,) = ran.files
    with zipfile.ZipFile(io.BytesIO(await downloaded(stack, reader, ran, records.name))) as bundle:
        events = [
            orjson.loads(line)
            for name in bundle.namelist()
            if name.endswith("events.jsonl")
            for line in bundle.read(name).splitlines()
        ]
    exported = {event["event_id"] for event in events}
    # The hits, and the records that change them (the refund message's deletion and read status), all Alice's.
    assert set(queued.event_ids) <= exported
    assert len(exported) > len(queued.event_ids)
    alices = await pg_pool.fetch(
        "SELECT encode(event_id, 'hex') AS e FROM archived_events WHERE subject_ref = decode($1, 'hex')", alice_ref
    )
    assert exported <= {row["e"] for row in alices}
    # The read was audited as an export by the reader, for Alice alone, tied to the job.
    rows = await pg_pool.fetch(
        "SELECT actor, subject_ref FROM audit_log WHERE action = 'export' AND details->>'job_id' = $1", ran.job_id
    )
    assert [(r["actor"], r["subject_ref"]) for r in rows] == [(reader.name, alice_ref)]

    # A reader's job is read within their scope as it stands when it runs: the case closed, nothing is exported.
    again = await actions.queue_search_export(reader, query=query, reason=REASON, formats=["jsonl"])
    assert isinstance(again, ExportJob)
    await stack.cases.close()
    failed = await run_job(stack, again)
    assert failed.status == "failed"
    assert failed.files == ()
    with pytest.raises(InvalidRequest, match="found nothing"):
        await actions.queue_search_export(reader, query=query, reason=REASON, formats=["jsonl"])
    with pytest.raises(OutsideScope):
        await actions.export_selected(reader, event_ids=list(queued.event_ids), reason=REASON)


async def test_a_dpos_search_export_is_a_signed_bag_that_names_the_search(
    stack: Stack, two_people: tuple[Person, Person], demo_env: dict[str, str], tmp_path: Path
) -> None:
    alice, bob = two_people
    dpo = Operator(f"test-dpo-{uuid.uuid4().hex[:6]}", "dpo")
    key = load_private_key(demo_env["WA_RETENTION_EXPORT_SIGNING__KEY"].encode())
    query = SearchFilter(keywords="refund", phone_number_id=alice.phone_number_id)
    queued = await stack.actions.queue_search_export(dpo, query=query, reason=REASON, formats=["rsmf", "all"])
    assert isinstance(queued, ExportJob)
    ran = await run_job(stack, queued, signing_key=key)
    assert (ran.status, ran.error) == ("done", None), ran.error
    names = {f.name for f in ran.files}
    assert names == {f"evidence-{ran.job_id}.zip", f"search-export-{ran.job_id}.rsmf"}

    rsmf = next(f.name for f in ran.files if f.name.endswith(".rsmf"))
    eml = email.message_from_bytes(await downloaded(stack, dpo, ran, rsmf), policy=default)
    assert eml["X-RSMF-Version"] == "2.0.0"
    (attachment,) = eml.iter_attachments()
    with zipfile.ZipFile(io.BytesIO(attachment.get_content())) as bundle:
        manifest = json.loads(bundle.read("rsmf_manifest.json"))
    jsonschema.Draft7Validator(manifest_schema(), format_checker=jsonschema.FormatChecker()).validate(manifest)
    people = {p["id"] for p in manifest["participants"]}
    assert {f"person:{alice.wa_id}", f"person:{bob.wa_id}"} <= people
    assert any(event.get("deleted") for event in manifest["events"])  # Alice's refund message, deleted

    with zipfile.ZipFile(io.BytesIO(await downloaded(stack, dpo, ran, f"evidence-{ran.job_id}.zip"))) as bundle:
        bundle.extractall(tmp_path)
    bag = tmp_path / f"evidence-{ran.job_id}"
    verified = verify_bag(bag, public_key=key.public_key())
    assert verified.ok, verified.failures
    info = (bag / "bag-info.txt").read_text()
    assert "Export-Scope: search" in info
    assert f"Export-Search-Query-Digest: {queued.selection['query'] if queued.selection else ''}" in info
    assert f"Export-Search-Hits: {len(queued.event_ids)}" in info
    assert "refund" not in info
