"""Retrieval, retention and GDPR against the real stack: what the user came for, and what the law asks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
from botocore.exceptions import ClientError
from mypy_boto3_s3 import S3Client
from prometheus_client import CollectorRegistry

from devtools import pipeline
from devtools.pipeline import Person
from devtools.serving import serve_asgi
from services.actions.access import ArchiveAccess, open_access
from services.archiver.rebuild import rebuild_index
from services.core.identity import resolve_subject_refs
from services.core.index import INDEX_COLUMNS, IndexRow, ObjectRow, binary_key, binary_keys, write_object_index
from services.core.reader import RecordLocation
from services.core.refusals import ReasonRequired
from services.governance.erasure import erase_subject
from services.governance.holds import create_hold, held_objects, holds_settled, release_hold
from services.governance.retention_run import delete_chunk, expired_objects, retention_run
from services.retention.api import create_admin_app
from services.review.conversation import load_conversation
from services.review.export import write_export
from tests.helpers.archive_runs import NOW, archive, audit_rows, crisis_bodies

pytestmark = pytest.mark.integration


async def test_a_deleted_message_comes_back_with_the_deletion_beside_it(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, prefix: str, access: ArchiveAccess
) -> None:
    person = Person.fresh()
    await archive(demo_env, pg_pool, prefix, crisis_bodies(person))
    conversation = await load_conversation(
        access.pool,
        access.reader,
        access.pepper,
        contact=person.wa_id,
        phone_number_id=person.phone_number_id,
        actor="crisis-officer",
        reason="customer disputes the refund",
    )
    by_id = {m.message_id: m for m in conversation.messages}
    m1, m2, b1, m3 = by_id["wamid.M1"], by_id["wamid.M2"], by_id["wamid.B1"], by_id["wamid.M3"]
    assert m1.payload["text"]["body"] == "the refund is approved, ref 4711"
    assert m1.deletion is not None
    assert (m1.deletion.by, m1.deletion.kind, m1.deletion.at) == ("customer", "revoke", NOW - 3600 + 60)
    assert m1.latest_status == "read"
    assert [e.payload["edit"]["message"]["text"]["body"] for e in m2.edits] == ["call me at 11"]
    assert m2.payload["text"]["body"] == "call me at 10"
    assert b1.direction == "outbound"
    assert b1.deletion is not None
    assert b1.deletion.by == "business"
    assert m3.deletion is not None
    assert m3.deletion.kind == "deleted-status"
    assert len(conversation.messages) == 4

    refs = await resolve_subject_refs(pg_pool, access.pepper, person.wa_id, person.phone_number_id)
    rows = await audit_rows(pg_pool, refs)
    assert [(r["actor"], r["action"], r["reason"]) for r in rows] == [
        ("crisis-officer", "retrieval", "customer disputes the refund")
    ]
    assert rows[0]["record_count"] == 9


async def test_no_reason_no_decryption_and_no_audit_row(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, prefix: str, access: ArchiveAccess, repo_root: Path
) -> None:
    person = Person.fresh()
    await archive(demo_env, pg_pool, prefix, crisis_bodies(person)[:1])
    with pytest.raises(ReasonRequired):
        await load_conversation(
            access.pool,
            access.reader,
            access.pepper,
            contact=person.wa_id,
            phone_number_id=None,
            actor="x",
            reason=None,
        )
    env = {**os.environ, "WA_RETENTION_S3__PREFIX": prefix}
    refused = subprocess.run(
        [sys.executable, "-m", "services.cli", "messages", "--contact", person.wa_id],
        capture_output=True,
        text=True,
        env=env,
        cwd=repo_root,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "--reason is required" in refused.stderr
    refs = await resolve_subject_refs(pg_pool, access.pepper, person.wa_id, None)
    assert await audit_rows(pg_pool, refs) == []

    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "messages",
            "--contact",
            person.wa_id,
            "--phone-number-id",
            person.phone_number_id,
            "--reason",
            "legal request 12",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=repo_root,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "the refund is approved, ref 4711" in shown.stdout
    rows = await audit_rows(pg_pool, refs)
    assert [(r["actor"], r["reason"]) for r in rows] == [(demo_env["WA_RETENTION_OPERATOR"], "legal request 12")]


async def test_retention_deletes_exactly_the_expired_unheld_objects(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, prefix: str, access: ArchiveAccess, s3_client: S3Client
) -> None:
    old, recent, held = Person.fresh(), Person.fresh(), Person.fresh()
    ten_years_ago = NOW - 10 * 365 * 86400
    await archive(demo_env, pg_pool, prefix, [pipeline.text_message(old, "wamid.OLD", "old", ten_years_ago)])
    await archive(demo_env, pg_pool, prefix, [pipeline.text_message(recent, "wamid.NEW", "new", NOW)])
    await archive(demo_env, pg_pool, prefix, [pipeline.text_message(held, "wamid.HELD", "held", ten_years_ago)])
    async with pg_pool.acquire() as conn:
        hold = await create_hold(
            conn,
            access.pepper,
            scope="conversation",
            case_ref="CASE-1",
            actor="dpo",
            phone_number_id=held.phone_number_id,
            contact=held.wa_id,
        )

    async def keys_of(person: Person) -> set[str]:
        refs = await resolve_subject_refs(pg_pool, access.pepper, person.wa_id, person.phone_number_id)
        rows = await pg_pool.fetch(
            "SELECT object_key FROM archived_events WHERE subject_ref = ANY($1::bytea[])", binary_keys(refs)
        )
        return {r["object_key"] for r in rows}

    old_keys, recent_keys, held_keys = await keys_of(old), await keys_of(recent), await keys_of(held)
    ours = old_keys | recent_keys | held_keys
    dry = await retention_run(access.pool, access.bucket, dry_run=True)
    assert set(dry.candidates) & ours == old_keys
    real = await retention_run(access.pool, access.bucket, dry_run=False)
    assert set(real.candidates) & ours == set(dry.candidates) & ours  # the dry run said exactly this
    assert await keys_of(old) == set()
    assert await keys_of(recent) == recent_keys
    assert await keys_of(held) == held_keys
    for key in old_keys:
        with pytest.raises(ClientError):
            s3_client.head_object(Bucket=access.bucket.name, Key=key)
        # every version is gone, not hidden behind a delete marker (the bucket is versioned for Object Lock)
        listing = s3_client.list_object_versions(Bucket=access.bucket.name, Prefix=key)
        assert [v for v in [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])] if v["Key"] == key] == []
    again = await retention_run(access.pool, access.bucket, dry_run=True)
    assert set(again.candidates) & ours == set()

    async with pg_pool.acquire() as conn:
        await release_hold(conn, hold.hold_id, actor="dpo")
    after_release = await retention_run(access.pool, access.bucket, dry_run=True)
    assert set(after_release.candidates) & ours == held_keys


async def test_an_object_goes_only_when_every_record_in_it_has_expired(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, prefix: str, access: ArchiveAccess
) -> None:
    person = Person.fresh()
    ten_years_ago = NOW - 10 * 365 * 86400
    await archive(
        demo_env,
        pg_pool,
        prefix,
        [
            pipeline.text_message(person, "wamid.MIXOLD", "old", ten_years_ago),
            pipeline.text_message(person, "wamid.MIXNEW", "new", NOW),
        ],
    )
    refs = await resolve_subject_refs(pg_pool, access.pepper, person.wa_id, person.phone_number_id)
    ref_keys = binary_keys(refs)
    rows = await pg_pool.fetch(
        "SELECT e.object_key, e.expires_at AS record_expiry, o.expires_at AS object_expiry"
        " FROM archived_events e JOIN archive_objects o USING (object_key) WHERE e.subject_ref = ANY($1::bytea[])",
        ref_keys,
    )
    assert len(rows) == 2
    assert len({r["object_key"] for r in rows}) == 1
    assert {r["object_expiry"] for r in rows} == {max(r["record_expiry"] for r in rows)}
    report = await retention_run(access.pool, access.bucket, dry_run=False)
    assert rows[0]["object_key"] not in report.candidates
    assert (
        await pg_pool.fetchval("SELECT count(*) FROM archived_events WHERE subject_ref = ANY($1::bytea[])", ref_keys)
        == 2
    )

    # A replay that rewrites the object with fewer records never brings its expiry forward.
    key = rows[0]["object_key"]
    before = rows[0]["object_expiry"]
    old_row = await pg_pool.fetchrow(
        "SELECT * FROM archived_events WHERE object_key = $1 ORDER BY expires_at LIMIT 1", key
    )
    obj = await pg_pool.fetchrow("SELECT * FROM archive_objects WHERE object_key = $1", key)
    assert old_row is not None
    assert obj is not None
    async with pg_pool.acquire() as conn, conn.transaction():
        await write_object_index(
            conn,
            ObjectRow(
                object_key=key,
                topic=obj["topic"],
                kafka_partition=obj["kafka_partition"],
                first_offset=obj["first_offset"],
                last_offset=obj["first_offset"],
                record_count=1,
                size_bytes=10,
                retain_until=None,
            ),
            [IndexRow(**{name: old_row[name] for name in INDEX_COLUMNS})],
        )
    assert await pg_pool.fetchval("SELECT expires_at FROM archive_objects WHERE object_key = $1", key) == before


async def test_a_hold_created_during_a_retention_run_stops_the_deletion(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, prefix: str, access: ArchiveAccess, s3_client: S3Client
) -> None:
    person = Person.fresh()
    await archive(
        demo_env, pg_pool, prefix, [pipeline.text_message(person, "wamid.LATE", "old", NOW - 10 * 365 * 86400)]
    )
    refs = await resolve_subject_refs(pg_pool, access.pepper, person.wa_id, person.phone_number_id)
    ref_keys = binary_keys(refs)
    keys = {
        r["object_key"]
        for r in await pg_pool.fetch(
            "SELECT object_key FROM archived_events WHERE subject_ref = ANY($1::bytea[])", ref_keys
        )
    }
    async with pg_pool.acquire() as conn:
        selected = [key for key in await expired_objects(conn, datetime.now(UTC)) if key in keys]
    assert selected == sorted(keys)

    # A chunk that is checking and deleting holds the holds lock: creating a hold waits for it.
    async with pg_pool.acquire() as deleting, pg_pool.acquire() as dpo:
        async with holds_settled(deleting):
            creating = asyncio.create_task(
                create_hold(
                    dpo,
                    access.pepper,
                    scope="contact",
                    case_ref="CASE-LATE",
                    actor="dpo",
                    contact=person.wa_id,
                )
            )
            await asyncio.sleep(0.5)
            assert not creating.done()
        hold = await asyncio.wait_for(creating, 10)

    # The hold came after the selection; the chunk checks again and keeps the object and its rows.
    outcome = await delete_chunk(access.pool, access.bucket, selected)
    assert (outcome.objects_deleted, outcome.objects_held) == (0, len(selected))
    for key in selected:
        s3_client.head_object(Bucket=access.bucket.name, Key=key)
    assert (
        await pg_pool.fetchval("SELECT count(*) FROM archived_events WHERE subject_ref = ANY($1::bytea[])", ref_keys)
        == 1
    )

    # Every scope of hold counts: the person's WABA and business number cover the object too.
    async with pg_pool.acquire() as conn:
        await release_hold(conn, hold.hold_id, actor="dpo")
        assert await held_objects(conn, selected) == set()
        waba_hold = await create_hold(
            conn, access.pepper, scope="waba", case_ref="CASE-WABA", actor="dpo", waba_id=person.waba_id
        )
        assert await held_objects(conn, selected) == set(selected)
        await release_hold(conn, waba_hold.hold_id, actor="dpo")
        number_hold = await create_hold(
            conn,
            access.pepper,
            scope="phone_number",
            case_ref="CASE-NUMBER",
            actor="dpo",
            phone_number_id=person.phone_number_id,
        )
        assert await held_objects(conn, selected) == set(selected)
        await release_hold(conn, number_hold.hold_id, actor="dpo")
    outcome = await delete_chunk(access.pool, access.bucket, selected)
    assert (outcome.objects_deleted, outcome.objects_held) == (len(selected), 0)
    assert (
        await pg_pool.fetchval("SELECT count(*) FROM archived_events WHERE subject_ref = ANY($1::bytea[])", ref_keys)
        == 0
    )


async def test_erasure_is_blocked_by_a_hold_then_shreds_every_copy(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, prefix: str, access: ArchiveAccess, s3_client: S3Client
) -> None:
    person = Person.fresh()
    request_ref = f"GDPR-{uuid.uuid4().hex[:8]}"
    bystander = Person(person.waba_id, person.phone_number_id, "1" + pipeline.digits(10))
    await archive(
        demo_env,
        pg_pool,
        prefix,
        [*crisis_bodies(person), pipeline.text_message(bystander, "wamid.OTHER", "not erased", NOW)],
    )
    sole = await archive(demo_env, pg_pool, prefix, [pipeline.text_message(person, "wamid.SOLE", "alone", NOW)])
    refs = await resolve_subject_refs(pg_pool, access.pepper, person.wa_id, None)
    ref_keys = binary_keys(refs)
    sole_key = await pg_pool.fetchval("SELECT object_key FROM archived_events WHERE event_id = $1", binary_key(sole[0]))
    rows_before = await pg_pool.fetch(
        "SELECT encode(event_id, 'hex') AS event_id, object_key, record_index FROM archived_events"
        " WHERE subject_ref = ANY($1::bytea[]) AND object_key <> $2",
        ref_keys,
        sole_key,
    )
    key_dump = await pg_pool.fetch(
        "SELECT subject_ref, dek_id, kek_id, wrapped_dek, created_at FROM subject_keys"
        " WHERE subject_ref = ANY($1::text[])",
        refs,
    )
    assert rows_before
    assert key_dump

    async with pg_pool.acquire() as conn:
        hold = await create_hold(
            conn, access.pepper, scope="contact", case_ref="LIT-7", actor="dpo", contact=person.wa_id
        )
    blocked = await erase_subject(
        access.pool,
        access.keyring,
        access.bucket,
        access.pepper,
        contact=person.wa_id,
        phone_number_id=None,
        request_ref=request_ref,
        actor="dpo",
    )
    assert blocked.status == "blocked"
    assert blocked.blocked_by == ["LIT-7"]
    assert await pg_pool.fetchval("SELECT count(*) FROM subject_keys WHERE subject_ref = ANY($1::text[])", refs) == len(
        key_dump
    )

    async with pg_pool.acquire() as conn:
        await release_hold(conn, hold.hold_id, actor="dpo")
    started = time.monotonic()
    done = await erase_subject(
        access.pool,
        access.keyring,
        access.bucket,
        access.pepper,
        contact=person.wa_id,
        phone_number_id=None,
        request_ref=request_ref,
        actor="dpo",
    )
    assert done.status == "completed"
    assert time.monotonic() - started < 10
    assert sorted(done.keys_destroyed) == sorted(str(r["dek_id"]) for r in key_dump)
    assert (
        await pg_pool.fetchval("SELECT count(*) FROM archived_events WHERE subject_ref = ANY($1::bytea[])", ref_keys)
        == 0
    )
    proof = orjson.loads(
        await pg_pool.fetchval("SELECT proof FROM erasure_requests WHERE request_ref = $1", request_ref)
    )
    assert person.wa_id not in orjson.dumps(proof).decode()
    # The object that held only this person's records is deleted, every version of it.
    assert done.objects_deleted == 1
    listing = s3_client.list_object_versions(Bucket=access.bucket.name, Prefix=sole_key)
    assert [v for v in [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])] if v["Key"] == sole_key] == []

    # The object the person shared with a bystander stays, but the person's records in it cannot be opened.
    still_indexed = {
        k["object_key"]
        for k in await pg_pool.fetch(
            "SELECT DISTINCT object_key FROM archived_events WHERE object_key = ANY($1::text[])",
            [r["object_key"] for r in rows_before],
        )
    }
    shared = [r for r in rows_before if r["object_key"] in still_indexed]
    assert shared, "the bystander shares the batch object"
    opened = await access.reader.open(
        [RecordLocation(r["event_id"], r["object_key"], r["record_index"]) for r in shared]
    )
    assert set(opened.values()) == {None}

    # A database restore that brings back the keys table cannot resurrect the key: the suppression list wins.
    async with pg_pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO subject_keys (subject_ref, dek_id, kek_id, wrapped_dek, created_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            [tuple(r) for r in key_dump],
        )
    access.keyring.cache.discard(refs[0])
    opened_after_restore = await access.reader.open(
        [RecordLocation(r["event_id"], r["object_key"], r["record_index"]) for r in shared]
    )
    assert set(opened_after_restore.values()) == {None}
    assert await pg_pool.fetchval("SELECT count(*) FROM subject_keys WHERE subject_ref = ANY($1::text[])", refs) == 0

    # rebuild-index does not bring the erased person's rows back either.
    report = await rebuild_index(access.pool, access.bucket, access.policy, prefix=prefix)
    assert report.skipped_shredded >= len(shared)
    assert (
        await pg_pool.fetchval("SELECT count(*) FROM archived_events WHERE subject_ref = ANY($1::bytea[])", ref_keys)
        == 0
    )

    # The person writes again after the erasure: archived under a new key, readable.
    # (Meta's time of a message sent after the erasure: a message dated before it would be dropped, see
    # tests/integration/test_erasure_final.py.)
    sent = int(time.time()) + 2
    later = await archive(demo_env, pg_pool, prefix, [pipeline.text_message(person, "wamid.AFTER", "again", sent)])
    conversation = await load_conversation(
        access.pool,
        access.reader,
        access.pepper,
        contact=person.wa_id,
        phone_number_id=None,
        actor="dpo",
        reason="check",
    )
    assert [m.event_id for m in conversation.messages] == later


async def test_export_holds_the_subject_and_nobody_else(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, prefix: str, access: ArchiveAccess, tmp_path: Path
) -> None:
    subject = Person.fresh()
    other = Person(subject.waba_id, subject.phone_number_id, "1" + pipeline.digits(10))
    await archive(
        demo_env,
        pg_pool,
        prefix,
        [
            pipeline.text_message(subject, "wamid.S1", "my own words", NOW - 10),
            pipeline.text_message(other, "wamid.O1", "somebody else's words", NOW - 5),
            pipeline.echo(subject, "wamid.S2", "reply to subject", NOW),
        ],
    )
    conversation = await load_conversation(
        access.pool,
        access.reader,
        access.pepper,
        contact=subject.wa_id,
        phone_number_id=subject.phone_number_id,
        actor="dpo",
        reason="Art. 15 request",
        purpose="export",
    )
    files = write_export(conversation.messages, tmp_path, formats=["json", "html"], request_ref="SAR-1")
    exported = {p.suffix: p.read_text(encoding="utf-8") for p in files}
    document = orjson.loads(exported[".json"])
    assert {m["message_id"] for m in document["messages"]} == {"wamid.S1", "wamid.S2"}
    for text in exported.values():
        assert "my own words" in text
        assert "somebody else" not in text
        assert other.wa_id not in text


async def test_admin_api_requires_a_token_and_the_right_role(demo_env: dict[str, str], prefix: str) -> None:
    settings = pipeline.retention_settings(demo_env, prefix)

    async def opener() -> ArchiveAccess:
        return await open_access(settings)

    registry = CollectorRegistry()
    app = create_admin_app(settings, opener, registry=registry)
    routes = [
        ("POST", "/v1/messages", "reader"),
        ("POST", "/v1/groups/messages", "reader"),
        ("POST", "/v1/break-glass", "reader"),
        ("GET", "/v1/search", "reader"),
        ("POST", "/v1/search", "reader"),
        ("POST", "/v1/erasures", "dpo"),
        ("GET", "/v1/erasures", "dpo"),
        ("POST", "/v1/erasures/GDPR-1/refuse", "dpo"),
        ("POST", "/v1/erasures/GDPR-1/extend", "dpo"),
        ("POST", "/v1/holds", "dpo"),
        ("GET", "/v1/holds", "dpo"),
        ("POST", f"/v1/holds/{uuid.uuid4()}/release", "dpo"),
        ("POST", "/v1/exports", "dpo"),
        ("POST", "/v1/exports/search", "reader"),
        ("GET", "/v1/exports", "reader"),
        ("GET", f"/v1/exports/{uuid.uuid4()}", "reader"),
        ("GET", f"/v1/exports/{uuid.uuid4()}/files/evidence.zip", "reader"),
        ("GET", "/v1/approvals", "reader"),
        ("GET", f"/v1/approvals/{uuid.uuid4()}/draft", "reader"),
        ("POST", "/v1/retention/run", "dpo"),
        ("GET", "/v1/audit", "dpo"),
    ]
    documented = {path for path, item in (await _openapi(app)).items() for _method in item}
    assert {r[1].split("?")[0] for r in routes} >= {p for p in documented if p.startswith("/v1/")} - {
        "/v1/holds/{hold_id}/release",
        "/v1/erasures/{request_ref}/refuse",
        "/v1/erasures/{request_ref}/extend",
        "/v1/approvals/{request_id}",
        "/v1/approvals/{request_id}/approve",
        "/v1/approvals/{request_id}/reject",
        "/v1/approvals/{request_id}/draft",
        "/v1/exports/{job_id}",
        "/v1/exports/{job_id}/files/{name}",
    }
    assert {"/v1/erasures/{request_ref}/refuse", "/v1/erasures/{request_ref}/extend"} <= documented
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        for method, path, needed in routes:
            anonymous = await client.request(method, path, json={})
            wrong = await client.request(method, path, json={}, headers={"authorization": "Bearer not-a-token-at-all"})
            assert (anonymous.status_code, wrong.status_code) == (401, 401), path
            if needed == "dpo":
                reader = await client.request(
                    method, path, json={}, headers={"authorization": f"Bearer {pipeline.READER_TOKEN}"}
                )
                assert reader.status_code == 403, path
        ok = await client.get(
            "/v1/search", params={"limit": 1}, headers={"authorization": f"Bearer {pipeline.READER_TOKEN}"}
        )
        assert ok.status_code == 200
        # The documentation and the metrics: with a token here, or on the ops port (Prometheus, the cluster).
        as_reader = {"authorization": f"Bearer {pipeline.READER_TOKEN}"}
        for path in ("/openapi.json", "/docs", "/metrics", "/nowhere"):
            assert (await client.get(path)).status_code == 401, path
        assert (await client.get("/openapi.json", headers=as_reader)).json()["paths"].keys() == documented
        assert (await client.get("/metrics", headers=as_reader)).status_code == 404
        assert (await client.get("/healthz")).status_code == 200
        refused = "wa_retention_api_refusals_total"
        assert (registry.get_sample_value(refused, {"status": "401", "reason": "token"}) or 0) == 2 * len(routes) + 4
        dpo_routes = sum(1 for r in routes if r[2] == "dpo")
        assert (registry.get_sample_value(refused, {"status": "403", "reason": "role"}) or 0) == dpo_routes
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.state.ops_port}", timeout=10) as ops:
            assert refused in (await ops.get("/metrics")).text
            assert (await ops.get("/openapi.json")).json()["paths"].keys() == documented
            assert "swagger-ui" in (await ops.get("/docs")).text


async def _openapi(app: object) -> dict[str, dict[str, object]]:
    from fastapi import FastAPI

    assert isinstance(app, FastAPI)
    paths: dict[str, dict[str, object]] = app.openapi()["paths"]
    return paths


def test_cli_refuses_unknown_commands(repo_root: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "nope"],
        capture_output=True,
        text=True,
        cwd=repo_root,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
