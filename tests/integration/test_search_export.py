"""Exports of a search result against the real stack (services/actions/exporting.py queue_search_export).

Two people write to one business number; both mention a refund. The DPO's keyword search finds both; a reader
whose case names one of them finds only that one's, and their export holds exactly those records (with the records
that change them: the deletion of the refund message), nothing of the other person's. The signed bag of the DPO's
export verifies, says its scope is a search and names it without its words; its RSMF validates against the
vendored schema. Nothing of the words reaches the job's row or the audit log.
"""

from __future__ import annotations

import dataclasses
import email
import hashlib
import io
import json
import time
import uuid
import zipfile
from email.policy import default
from pathlib import Path

import asyncpg
import httpx
import jsonschema
import orjson
import pytest
from prometheus_client import CollectorRegistry

from devtools import pipeline
from devtools.pipeline import Person
from devtools.serving import serve_asgi
from services.actions.access import ArchiveAccess, open_access
from services.actions.layer import Actions, ApprovalRequest, ApprovalRequired, Operator
from services.core.identity import resolve_subject_refs
from services.core.refusals import InvalidRequest
from services.evidence.bag import fingerprint, load_private_key
from services.evidence.jobs import ExportJob
from services.evidence.rsmf import manifest_schema
from services.governance.scope import OutsideScope
from services.retention.api import create_admin_app
from services.retention.settings import FourEyesSettings
from services.review.search import SearchFilter
from tests.helpers.action_stack import CLI_OPERATOR, Stack
from tests.helpers.archive_runs import archive, crisis_bodies
from tests.helpers.export_jobs import admin_work_bucket, fail_leftover_jobs
from tests.helpers.support import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.export_queue]

REASON = "dispute 88: what was promised"
DPO = {"authorization": f"Bearer {pipeline.DPO_TOKEN}"}
DPO_OPERATOR = Operator("test-dpo", "dpo")  # the name DPO_TOKEN stands for (devtools/pipeline.py)


async def run_job(stack: Stack, queued: ExportJob, **kwargs: object) -> ExportJob:
    """Run this job (not another test's: the shared database may hold some)."""
    ran = await stack.actions.run_next_export(ttl_s=600, stale_s=300, job_id=queued.job_id, **kwargs)  # type: ignore[arg-type]
    assert ran is not None
    assert ran.job_id == queued.job_id
    return ran


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

    # Above the four-eyes threshold (0 here): a request with the hits frozen in it; a DPO's approval queues the job.
    strict = Actions(
        dataclasses.replace(actions.access, four_eyes=FourEyesSettings(export_messages=0)), actions.metrics
    )
    asked = await strict.queue_search_export(reader, query=query, reason=REASON, formats=["pdf"])
    assert isinstance(asked, ApprovalRequest)
    assert (asked.kind, asked.requested_by, sorted(asked.target["event_ids"])) == (
        "export.search",
        reader.name,
        sorted(queued.event_ids),
    )
    with pytest.raises(ApprovalRequired):
        await strict.queue_selected(reader, event_ids=queued.event_ids, description={}, reason=REASON, formats=["pdf"])
    approved = await strict.approve(dpo, asked.request_id, reason="the court asked for it")
    job = approved.result
    assert isinstance(job, ExportJob)
    await pg_pool.execute("UPDATE export_jobs SET status = 'failed' WHERE job_id = $1::uuid", job.job_id)  # not run
    assert (job.requested_by, job.scope, sorted(job.event_ids)) == (dpo.name, "search", sorted(queued.event_ids))

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
    stack: Stack,
    two_people: tuple[Person, Person],
    demo_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
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
    code, printed, err = await run_cli(
        ["verify-export", str(bag), "--fingerprint", fingerprint(key.public_key())], capsys
    )
    assert code == 0, err
    assert "verified" in printed
    info = (bag / "bag-info.txt").read_text()
    assert "Export-Scope: search" in info
    assert f"Export-Search-Query-Digest: {queued.selection['query'] if queued.selection else ''}" in info
    assert f"Export-Search-Hits: {len(queued.event_ids)}" in info
    assert "refund" not in info


async def test_the_admin_api_queues_export_jobs_and_hands_their_files_over(
    stack: Stack, two_people: tuple[Person, Person], demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    """POST answers 202 with the job and its Location; the worker runs it; GET shows its progress, then each file
    with a link that downloads it (the bearer token of its requester) until it expires. The person's export in
    format ``json`` is the subject-access document the API answered with before."""
    alice, _bob = two_people

    async def opener() -> ArchiveAccess:
        opened = await open_access(stack.settings)
        opened.work = admin_work_bucket(demo_env)
        return opened

    app = create_admin_app(stack.settings, opener, registry=CollectorRegistry(), serve_ops=False)
    queued: list[str] = []
    try:
        async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=60, headers=DPO) as api:
            person = await api.post(
                "/v1/exports",
                json={
                    "contact": alice.wa_id,
                    "phone_number_id": alice.phone_number_id,
                    "reason": REASON,
                    "formats": ["json"],
                },
            )
            searched = await api.post(
                "/v1/exports/search",
                json={
                    "keywords": "refund",
                    "phone_number_id": alice.phone_number_id,
                    "reason": REASON,
                    "formats": ["jsonl"],
                },
            )
            for answer in (person, searched):
                assert answer.status_code == 202, answer.text
                (job,) = answer.json()["jobs"]
                assert answer.headers["location"] == f"/v1/exports/{job['job_id']}"
                assert (job["status"], job["files"]) == ("queued", [])
                queued.append(job["job_id"])
            assert searched.json()["jobs"][0]["selection"]["keywords"] == 1
            assert "refund" not in searched.text

            for job_id in queued:
                await run_job(stack, await stack.actions.export_job(DPO_OPERATOR, job_id))
                shown = (await api.get(f"/v1/exports/{job_id}")).json()
                assert shown["status"] == "done", shown
                (file,) = shown["files"]
                got = await api.get(file["url"])
                assert got.status_code == 200, got.text
                assert hashlib.sha256(got.content).hexdigest() == file["sha256"]
                if job_id == queued[0]:
                    document = orjson.loads(got.content)
                    assert (document["format"], document["message_count"] >= 3) == ("wa-archive-subject-export/1", True)
                # A link altered, or used without the job's requester's token, downloads nothing.
                assert (await api.get(file["url"].replace("sig=", "sig=00"))).status_code == 404
                other = {"authorization": f"Bearer {pipeline.READER_TOKEN}"}
                assert (await api.get(file["url"], headers=other)).status_code == 404
    finally:
        await pg_pool.execute(
            "UPDATE export_jobs SET status = 'failed', error = 'left by an earlier test run'"
            " WHERE job_id = ANY($1::uuid[]) AND status IN ('queued', 'running')",
            queued,
        )


async def test_the_cli_exports_what_a_search_shows(
    stack: Stack, two_people: tuple[Person, Person], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice, bob = two_people
    out = tmp_path / "search"
    argv = ["export", "--search", "refund", "--phone-number-id", alice.phone_number_id, "--reason", REASON]
    code, _out, err = await run_cli([*argv, "--format", "json", "--out", str(out)], capsys)
    assert (code, err.strip()) == (2, "refused: a search result exports as pdf, rsmf, jsonl, all (--format)")
    code, printed, err = await run_cli([*argv, "--format", "jsonl", "--out", str(out)], capsys)
    assert code == 0, err
    events = [orjson.loads(line) for line in (out / "events.jsonl").read_bytes().splitlines()]
    # Both people's messages with the words (and what changes them), nothing else of theirs: Bob's one message.
    texts = b"".join((out / "events.jsonl").read_bytes().splitlines())
    assert b"where is my refund bob" in texts
    assert b"the refund is approved" in texts
    assert len(events) >= 3
    assert "found by the search" in printed
    read = await stack.actions.access.pool.fetch(
        "SELECT subject_ref, details FROM audit_log WHERE action = 'export' AND actor = $1 AND reason = $2"
        " ORDER BY audit_id DESC LIMIT 2",
        CLI_OPERATOR,
        REASON,
    )
    assert len(read) == 2  # one row per person read, each naming the search by its description
    assert all("refund" not in row["details"] for row in read)
    pool, pepper = stack.actions.access.pool, stack.actions.access.pepper
    assert {row["subject_ref"] for row in read} == {
        await first_ref(pool, pepper, alice),
        await first_ref(pool, pepper, bob),
    }
