"""Tamper evidence on the real stack (services/evidence/chain.py, verify.py): the archiver enters every object it
writes in the hash chain; a retention run and an erasure enter what they delete; `wa-archive verify` finds nothing
wrong with that, through a database loss and `wa-archive recover`, and reports an object altered, one deleted and
one added behind the archive's back — each exactly once, and in the metric the alert reads.

One test, in a schema of its own (the `archive` fixture), so the database can be lost as a whole.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from mypy_boto3_s3 import S3Client
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from devtools import pipeline
from devtools.graph_api import FakeGraphApi
from devtools.pipeline import Person
from services.archiver.settings import FlushSettings, GraphSettings
from services.core.settings import PostgresSettings
from services.evidence.chain import GOVERNANCE_STREAM, archive_stream, streams_root
from services.evidence.signing import new_private_key_text
from services.evidence.verify import baseline_archive, verify_archive
from services.governance.erasure import erase_subject
from services.governance.metrics import RetentionMetrics
from services.governance.retention_run import retention_run
from services.retention.service import refresh_gauges
from tests.helpers.kek_archive import Archive, lose_the_database, messages, recover, run_cli

pytestmark = pytest.mark.integration

SIGNING_KEY = new_private_key_text()


async def archive_in_pairs(archive: Archive, bodies: list[bytes], graph: GraphSettings | None = None) -> None:
    """Archive ``bodies`` in objects of two records each (several objects from one short run), in one consumer group:
    a later run archives only what was produced since."""
    events = pipeline.events_of(bodies)
    await pipeline.produce(f"127.0.0.1:{archive.demo_env['WA_KAFKA_PORT']}", archive.topic, events)
    settings = pipeline.archiver_settings(archive.demo_env, archive.topic, archive.dlq, archive.prefix).model_copy(
        update={
            "pg": PostgresSettings(dsn=SecretStr(archive.dsn_of("ARCHIVER"))),
            "keys": archive.keys(archive.a),
            "flush": FlushSettings(max_records=2, max_age_s=0.3),
            "group_id": f"chain-{archive.topic}",
            **({"graph": graph} if graph else {}),
        }
    )
    async with pipeline.running_archiver(settings):
        await pipeline.wait_indexed(archive.pool, {e.event_id for e in events})


def verify(archive: Archive) -> tuple[int, dict[str, Any]]:
    env = {**archive.cli_env(archive.a), "WA_RETENTION_SIGNING__PRIVATE_KEY": SIGNING_KEY}
    done = run_cli(env, "verify", "--settle-seconds", "0")
    assert "ed25519:sha256:" in done.stderr, "the trusted key's fingerprint is shown"
    report: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, report


async def test_tampering_is_reported_and_retention_erasure_and_recovery_are_not(
    archive: Archive, people: list[Person], pg_dsn: str, s3_client: S3Client
) -> None:
    erased, *live = people
    # The erased person's two messages fill an object of their own, which the erasure deletes.
    bodies = messages(erased, "GONE", 2)
    for n, person in enumerate(live):
        bodies += messages(person, f"KEPT{n}", 2)
    await archive_in_pairs(archive, bodies)
    objects = [r["object_key"] for r in await archive.pool.fetch("SELECT object_key FROM archive_objects")]
    assert len(objects) == 4

    async with archive.access(archive.a) as access:
        outcome = await erase_subject(
            access.pool,
            access.keyring,
            access.bucket,
            access.pepper,
            contact=erased.wa_id,
            phone_number_id=None,
            request_ref=f"GDPR-{uuid.uuid4().hex[:8]}",
            actor="dpo",
        )
        assert (outcome.status, outcome.objects_deleted) == ("completed", 1)
        # One object's records expire: the retention run deletes it.
        expiring = await archive.pool.fetchval("SELECT min(object_key) FROM archive_objects")
        await archive.pool.execute(
            "UPDATE archive_objects SET expires_at = now() - interval '1 day' WHERE object_key = $1", expiring
        )
        report = await retention_run(access.pool, access.bucket, dry_run=False, now=datetime.now(UTC))
        assert report.objects_deleted == 1

    env = {**archive.cli_env(archive.a), "WA_RETENTION_SIGNING__PRIVATE_KEY": SIGNING_KEY}
    signed = run_cli(env, "chain", "checkpoint")
    assert signed.returncode == 0, signed.stderr

    # The database is lost; recovery sets the chain's heads from the bucket, and archiving goes on from them.
    await lose_the_database(archive, pg_dsn)
    recovered = recover(archive, pg_dsn)
    assert recovered["chain_streams"] == 2  # the partition's stream and the governance stream
    # After it, a message with an image: the batch object and the medium enter the chain together.
    async with FakeGraphApi(token="graph-token-for-chain") as api:
        photo = api.add_media("photo-1", b"\xff\xd8\xff not really a jpeg" * 40)
        image = pipeline.image(
            live[0], "wamid.AFTER.IMG", int(time.time()), id="photo-1", sha256=photo, mime_type="image/jpeg"
        )
        await archive_in_pairs(
            archive, [*messages(live[0], "AFTER", 1), image], api.graph_settings(attempts=1, backoff_s=0.01)
        )
    media = await archive.pool.fetchval("SELECT count(*) FROM archived_media WHERE status = 'archived'")
    assert media == 1

    code, clean = verify(archive)
    assert (code, clean["findings"], clean["chain_faults"], clean["checkpoint_faults"]) == (0, [], [], [])
    assert clean["checkpoints"] == 1
    assert clean["objects"] == 4  # 4 written, 1 erased, 1 expired; after the recovery a batch and its medium
    stream = archive_stream(archive.topic, 0)
    entries = [
        o["Key"]
        for o in s3_client.list_objects_v2(Bucket="wa-archive", Prefix=f"{streams_root(archive.prefix)}{stream}/")[
            "Contents"
        ]
    ]
    assert len(entries) == 5, "one entry per object written, none overwritten after the recovery"
    governance = s3_client.list_objects_v2(
        Bucket="wa-archive", Prefix=f"{streams_root(archive.prefix)}{GOVERNANCE_STREAM}/"
    )["Contents"]
    assert len(governance) == 2  # the erasure, the retention run

    # Behind the archive's back: one object altered, one deleted, one added.
    live_objects = sorted(
        o["Key"] for o in s3_client.list_objects_v2(Bucket="wa-archive", Prefix=f"{archive.prefix}/")["Contents"]
    )
    altered, deleted = live_objects[0], live_objects[1]
    body = bytearray(s3_client.get_object(Bucket="wa-archive", Key=altered)["Body"].read())
    body[-40] ^= 1
    s3_client.put_object(Bucket="wa-archive", Key=altered, Body=bytes(body))
    s3_client.delete_object(Bucket="wa-archive", Key=deleted)
    added = f"{archive.prefix}/{archive.topic}/00000/00000000000000099999.waarc"
    s3_client.put_object(Bucket="wa-archive", Key=added, Body=b"not written by the archiver")

    code, found = verify(archive)
    assert code == 1
    assert sorted((f["kind"], f["key"]) for f in found["findings"]) == [
        ("altered", altered),
        ("missing", deleted),
        ("unexpected", added),
    ]
    assert found["chain_faults"] == []

    registry = CollectorRegistry()
    async with archive.access(archive.a) as access:
        await refresh_gauges(access, RetentionMetrics(registry))
    for kind in ("missing", "altered", "unexpected"):
        assert registry.get_sample_value("wa_archive_verify_findings", {"kind": kind}) == 1
    assert registry.get_sample_value("wa_archive_verify_findings", {"kind": "chain_faults"}) == 0


async def test_a_baseline_enters_the_objects_older_than_the_chain_once_and_nothing_added_since(
    archive: Archive, people: list[Person], s3_client: S3Client
) -> None:
    # Written by a release without the chain: the chain begins with the archiving below.
    before = [f"{archive.prefix}/legacy/00000/{n:020d}.waarc" for n in range(2)]
    for n, key in enumerate(before):
        s3_client.put_object(Bucket="wa-archive", Key=key, Body=f"archived before the chain {n}".encode() * 20)
    # The store's Last-Modified counts whole seconds, and a baseline takes only what changed a second before the
    # chain began (services/evidence/chain.py pre_chain): the chain's first entry must come more than a second later.
    await asyncio.sleep(1.1)
    await archive_in_pairs(archive, messages(people[0], "CHAINED", 2))
    added = f"{archive.prefix}/legacy/00000/{99:020d}.waarc"
    s3_client.put_object(Bucket="wa-archive", Key=added, Body=b"added behind the archive's back")

    async with archive.access(archive.a) as access:
        found = await verify_archive(access.bucket, trusted={}, settle_s=0)
        assert sorted(f.key for f in found.findings if f.kind == "unexpected") == sorted([*before, added])

        # The command as an operator runs it once after the upgrade: audited with its reason.
        done = run_cli(
            archive.cli_env(archive.a), "chain", "baseline", "--reason", "upgrade CHG-7", "--settle-seconds", "0"
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["entered"], report["left"], report["entries"]) == (2, 1, 1)
        audited = await archive.pool.fetch("SELECT actor, reason FROM audit_log WHERE action = 'chain.baseline'")
        assert [(r["actor"], r["reason"]) for r in audited] == [("test-operator", "upgrade CHG-7")]

        found = await verify_archive(access.bucket, trusted={}, settle_s=0)
        assert [(f.kind, f.key) for f in found.findings] == [("unexpected", added)], "what came after stays a finding"
        assert found.baselined == 2

        # From the baseline on, a change to those objects is an alteration like any other.
        s3_client.put_object(Bucket="wa-archive", Key=before[0], Body=b"rewritten after the baseline")
        found = await verify_archive(access.bucket, trusted={}, settle_s=0)
        assert sorted((f.kind, f.key) for f in found.findings) == [("altered", before[0]), ("unexpected", added)]

        again = await baseline_archive(access.bucket, access.pool, settle_s=0)
        assert (again.entered, again.entries) == (0, 0), "a second run enters nothing"
