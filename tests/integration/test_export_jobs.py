"""Export jobs against the real stack (services/evidence/jobs.py, services/actions/exporting.py).

Queued by a DPO with a reason (audited ``export.requested``), run by the worker (the decrypting read audited as an
export, by the requester), the files land in the work bucket under ``exports/<job id>/`` with the SHA-256 the job
records, are streamed back to the requester (audited), and are deleted when the job expires. A job left running
by a worker that died is taken again once its heartbeat is stale, and the dead worker can no longer touch it.
"""

from __future__ import annotations

import hashlib
import subprocess
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest
from mypy_boto3_s3 import S3Client
from pydantic import SecretStr

from devtools.pipeline import Person
from services.actions.layer import NotFound, Operator
from services.core.bucket import ArchiveBucket
from services.core.identity import resolve_subject_refs
from services.core.refusals import ActionRefused
from services.core.settings import S3Settings
from services.evidence import jobs
from services.evidence.bag import load_private_key, verify_bag
from tests.helpers.action_stack import Stack
from tests.helpers.archive_runs import archive, crisis_bodies
from tests.helpers.support import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.export_queue]

REASON = "Art. 15 request of the customer"


@pytest.fixture
async def work_stack(stack: Stack, demo_env: dict[str, str], pg_pool: asyncpg.Pool) -> Stack:
    """The stack with the work bucket opened by the S3 administrator: the running SeaweedFS loads stack.sh's
    identities when it starts, and test_least_privilege.py checks retention's own Write on the work bucket.
    Jobs queued by an earlier run of this module that was stopped half-way are failed, so the claims below
    take this run's jobs."""
    await pg_pool.execute(
        "UPDATE export_jobs SET status = 'failed', error = 'left by an earlier test run'"
        " WHERE status IN ('queued', 'running') AND requested_by LIKE 'test-export-%'"
    )
    stack.actions.access.work = ArchiveBucket(
        S3Settings(
            endpoint_url=demo_env["WA_ARCHIVER_S3__ENDPOINT_URL"],
            access_key=demo_env["WA_S3_ACCESS_KEY"],
            secret_key=SecretStr(demo_env["WA_S3_SECRET_KEY"]),
            bucket=demo_env["WA_S3_WORK_BUCKET"],
        )
    )
    return stack


async def archived_ref(pool: asyncpg.Pool, pepper: bytes, person: Person) -> str:
    """A pseudonym of ``person`` that their archived events are under (what the console's pages name them by)."""
    refs = await resolve_subject_refs(pool, pepper, person.wa_id, None)
    found: str = await pool.fetchval(
        "SELECT encode(subject_ref, 'hex') FROM archived_events"
        " WHERE subject_ref IN (SELECT decode(r, 'hex') FROM unnest($1::text[]) r) LIMIT 1",
        refs,
    )
    return found


async def test_a_job_runs_to_the_work_bucket_downloads_and_expires(
    work_stack: Stack,
    demo_env: dict[str, str],
    pg_pool: asyncpg.Pool,
    s3_client: S3Client,
    capsys: pytest.CaptureFixture[str],
) -> None:
    actions = work_stack.actions
    person = Person.fresh()
    await archive(demo_env, pg_pool, work_stack.settings.s3.prefix, crisis_bodies(person))
    subject_ref = await archived_ref(pg_pool, actions.access.pepper, person)
    dpo = Operator(f"test-export-{uuid.uuid4().hex[:8]}", "dpo")

    queued = await actions.queue_export(dpo, subject_ref=subject_ref, reason=REASON, formats=["json", "html"])
    assert (queued.status, queued.step, queued.requested_by) == ("queued", "queued", dpo.name)
    requested = await pg_pool.fetchrow(
        "SELECT actor, reason, subject_ref, details FROM audit_log WHERE action = 'export.requested'"
        " AND details->>'job_id' = $1",
        queued.job_id,
    )
    assert requested is not None
    assert (requested["actor"], requested["reason"], requested["subject_ref"]) == (dpo.name, REASON, subject_ref)

    ran = await actions.run_next_export(ttl_s=3600, stale_s=300, job_id=queued.job_id)  # not another test's
    assert ran is not None
    assert ran.job_id == queued.job_id
    assert (ran.status, ran.error, ran.attempts) == ("done", None, 1)
    assert ran.expires_at is not None
    assert ran.finished_at is not None
    assert ran.expires_at - ran.finished_at == timedelta(seconds=3600)
    assert sorted(f.name.rsplit(".", 1)[1] for f in ran.files) == ["html", "json"]
    work = demo_env["WA_S3_WORK_BUCKET"]
    for file in ran.files:
        body = s3_client.get_object(Bucket=work, Key=f"exports/{ran.job_id}/{file.name}")["Body"].read()
        assert (len(body), hashlib.sha256(body).hexdigest()) == (file.size, file.sha256)
    document = next(f for f in ran.files if f.name.endswith(".json"))
    # The decrypting read was audited as an export, by the requester, with the reason.
    read = await pg_pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'export' AND actor = $1 AND reason = $2 AND subject_ref = $3",
        dpo.name,
        REASON,
        subject_ref,
    )
    assert read == 1

    # Downloaded as a stream, audited; another reader may not see the job.
    file, pieces = await actions.export_file(dpo, ran.job_id, document.name)
    body = b"".join([piece async for piece in pieces])
    assert hashlib.sha256(body).hexdigest() == file.sha256
    assert orjson.loads(body)["message_count"] >= 3
    assert (
        await pg_pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'export.downloaded' AND details->>'job_id' = $1", ran.job_id
        )
        == 1
    )
    with pytest.raises(NotFound):  # a reader follows their own jobs only (a search result's)
        await actions.export_job(Operator("someone-else", "reader"), ran.job_id)
    with pytest.raises(NotFound):
        await actions.export_file(dpo, ran.job_id, "../other-file.json")
    assert [j.job_id for j in await actions.export_jobs(dpo)] == [ran.job_id]
    # The CLI (a DPO of its own) shows the job and lists it among everyone's, without the reason.
    code, out, err = await run_cli(["exports", "show", ran.job_id], capsys)
    assert code == 0, err
    shown = orjson.loads(out)
    assert (shown["status"], shown["files"]) == ("done", [f.to_json() for f in ran.files])
    assert REASON not in out
    code, out, err = await run_cli(["exports", "list", "--all", "--format", "json"], capsys)
    assert code == 0, err
    assert ran.job_id in {job["job_id"] for job in orjson.loads(out)}

    # Past its expiry: the files are deleted and the job is `expired` (no longer downloadable).
    assert ran.expires_at is not None
    expired = await jobs.expire_jobs(actions.access.pool, actions._work(), now=ran.expires_at + timedelta(seconds=1))
    assert ran.job_id in expired
    listed = s3_client.list_objects_v2(Bucket=work, Prefix=f"exports/{ran.job_id}/")
    assert listed.get("KeyCount", 0) == 0
    assert (await actions.export_job(dpo, ran.job_id)).status == "expired"
    with pytest.raises(NotFound):
        await actions.export_file(dpo, ran.job_id, document.name)


async def test_a_job_of_a_dead_worker_is_taken_again(work_stack: Stack, pg_pool: asyncpg.Pool) -> None:
    actions = work_stack.actions
    dpo = Operator(f"test-export-{uuid.uuid4().hex[:8]}", "dpo")
    subject_ref = hashlib.sha256(uuid.uuid4().bytes).hexdigest()  # nobody's: the read finds no record
    queued = await actions.queue_export(dpo, subject_ref=subject_ref, reason=REASON, formats=["json"])

    # Claimed by id: the shared database may hold other runs' jobs, queued or left running.
    first = await jobs.claim_job(pg_pool, stale_s=300, job_id=queued.job_id)
    assert first is not None
    assert (first.job_id, first.status, first.attempts) == (queued.job_id, "running", 1)
    # A live worker's job is not taken; once its heartbeat is stale, it is, with a new attempt number.
    assert await jobs.claim_job(pg_pool, stale_s=300, job_id=queued.job_id) is None
    later = datetime.now(UTC) + timedelta(seconds=301)
    second = await jobs.claim_job(pg_pool, stale_s=300, now=later, job_id=queued.job_id)
    assert second is not None
    assert (second.job_id, second.attempts) == (queued.job_id, 2)
    # The presumed-dead worker can no longer report progress on it.
    with pytest.raises(jobs.JobLost):
        await jobs.Progress(pg_pool, first).flush()
    await jobs.Progress(pg_pool, second).flush()
    # After MAX_ATTEMPTS deaths the job is failed, with fixed words.
    third = await jobs.claim_job(pg_pool, stale_s=300, now=later + timedelta(seconds=301), job_id=queued.job_id)
    assert third is not None
    assert third.attempts == jobs.MAX_ATTEMPTS
    assert await jobs.claim_job(pg_pool, stale_s=300, now=later + timedelta(seconds=602), job_id=queued.job_id) is None
    failed = await actions.export_job(dpo, queued.job_id)
    assert (failed.status, failed.error) == ("failed", jobs.ERRORS["crashed"])


async def test_queueing_is_refused_without_reason_role_or_pseudonym(work_stack: Stack, pg_pool: asyncpg.Pool) -> None:
    actions = work_stack.actions
    subject_ref = hashlib.sha256(b"x").hexdigest()
    before = await pg_pool.fetchval("SELECT count(*) FROM export_jobs")
    refusals = [
        actions.queue_export(Operator("test-export-r", "reader"), subject_ref=subject_ref, reason=REASON),
        actions.queue_export(Operator("test-export-d", "dpo"), subject_ref=subject_ref, reason=""),
        actions.queue_export(Operator("test-export-d", "dpo"), subject_ref="+33612345678", reason=REASON),
        actions.queue_export(Operator("test-export-d", "dpo"), subject_ref=subject_ref, reason=REASON, formats=["exe"]),
    ]
    for refused in refusals:
        with pytest.raises(ActionRefused):
            await refused
    assert await pg_pool.fetchval("SELECT count(*) FROM export_jobs") == before


async def test_a_job_hands_over_the_pdf_and_the_signed_package_that_verifies(
    work_stack: Stack, demo_env: dict[str, str], pg_pool: asyncpg.Pool, s3_client: S3Client, tmp_path: Path
) -> None:
    actions = work_stack.actions
    person = Person.fresh()
    await archive(demo_env, pg_pool, work_stack.settings.s3.prefix, crisis_bodies(person))
    subject_ref = await archived_ref(pg_pool, actions.access.pepper, person)
    dpo = Operator(f"test-export-{uuid.uuid4().hex[:8]}", "dpo")
    key = load_private_key(demo_env["WA_RETENTION_EXPORT_SIGNING__KEY"].encode())

    # Without a signing key the worker cannot sign: the job fails in words that say so, and nothing is handed over.
    unsigned = await actions.queue_export(dpo, subject_ref=subject_ref, reason=REASON, formats=["all"])
    failed = await actions.run_next_export(ttl_s=3600, stale_s=300, job_id=unsigned.job_id)
    assert failed is not None
    assert (failed.job_id, failed.status, failed.error) == (unsigned.job_id, "failed", jobs.ERRORS["unsigned"])
    listed = s3_client.list_objects_v2(Bucket=demo_env["WA_S3_WORK_BUCKET"], Prefix=f"exports/{unsigned.job_id}/")
    assert listed.get("KeyCount", 0) == 0

    queued = await actions.queue_export(
        dpo, subject_ref=subject_ref, reason=REASON, formats=["pdf", "all"], language="fr"
    )
    ran = await actions.run_next_export(ttl_s=3600, stale_s=300, signing_key=key, job_id=queued.job_id)
    assert ran is not None
    assert (ran.job_id, ran.status, ran.error) == (queued.job_id, "done", None)
    names = sorted(f.name for f in ran.files)
    assert f"evidence-{ran.job_id}.zip" in names
    assert [n for n in names if n.endswith(".pdf")], names
    got: dict[str, Path] = {}
    for file in ran.files:
        body = s3_client.get_object(Bucket=demo_env["WA_S3_WORK_BUCKET"], Key=f"exports/{ran.job_id}/{file.name}")[
            "Body"
        ].read()
        assert hashlib.sha256(body).hexdigest() == file.sha256
        got[file.name] = tmp_path / file.name
        got[file.name].write_bytes(body)
    # The transcript, in the job's language, shows the deleted message and its deletion.
    pdf = next(path for name, path in got.items() if name.endswith(".pdf"))
    shown = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "the refund is approved, ref 4711" in shown
    assert "SUPPRIMÉ" in shown.upper()
    # The zip is the signed bag: unzipped, every hash and the signature check against the worker's key.
    with zipfile.ZipFile(got[f"evidence-{ran.job_id}.zip"]) as bundle:
        bundle.extractall(tmp_path / "unzipped")
    bag = tmp_path / "unzipped" / f"evidence-{ran.job_id}"
    verified = verify_bag(bag, public_key=key.public_key())
    assert verified.ok, verified.failures
    assert verified.trusted
    assert (bag / "data" / "events.jsonl").exists() or any((bag / "data").glob("*.jsonl"))
    # The bag names the signed checkpoint of the archive's hash chain written when it was made; it is in the bucket.
    info = (bag / "bag-info.txt").read_text()
    pinned = next(line.split(": ", 1)[1] for line in info.splitlines() if line.startswith("Archive-Chain-Checkpoint"))
    s3_client.head_object(Bucket=work_stack.settings.s3.bucket, Key=pinned)
