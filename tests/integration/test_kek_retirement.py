"""KEK retirement on the real stack: records archived under KEK A, one person erased, A+B configured, every key
rewrapped to B (interrupted once midway, then resumed), A removed from the settings: every live record reads
back, the erased person stays unreadable, `keys status` shows no key under A, and a key left under A fails with
an error naming the KEK. Also: archivers writing new keys and an erasure shredding one while a rewrap runs, and a
key row locked by an archiver's indexing transaction, which the rewrap skips instead of waiting for, and takes on
its next run; an
archiver that lacks a key's KEK, which waits and names it; `wa-archive keys rewrap` killed (SIGKILL) midway and
run again.

The rewrap walks every key of its database, so each test gets a PostgreSQL schema of its own (the shared one
holds the other tests' keys, which must stay under the demo KEK).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from devtools import pipeline
from devtools.broker import create_topic
from devtools.pipeline import Person
from devtools.samples import REPO_ROOT
from devtools.serving import serve_asgi
from services.actions.access import open_access
from services.actions.layer import Actions, Operator
from services.core.crypto import UnknownKek
from services.core.index import binary_keys
from services.core.keyring import RewrapRefused
from services.core.reader import RecordLocation
from services.core.settings import PostgresSettings
from services.governance.metrics import RetentionMetrics
from services.retention.api import create_admin_app
from tests.helpers.erasure import erase, readable
from tests.helpers.kek_archive import Archive, B, archive_messages, messages, run_cli

pytestmark = pytest.mark.integration

OPERATOR = Operator("test-operator", "dpo")


def wamids(tag: str, count: int) -> list[str]:
    return sorted(f"wamid.{tag}.{n}" for n in range(count))


async def locations(pool: asyncpg.Pool, bodies: list[bytes]) -> list[RecordLocation]:
    rows = await pool.fetch(
        "SELECT encode(event_id, 'hex') AS event_id, object_key, record_index FROM archived_events"
        " WHERE event_id = ANY($1::bytea[])",
        binary_keys([e.event_id for e in pipeline.events_of(bodies)]),
    )
    return [RecordLocation(row["event_id"], row["object_key"], row["record_index"]) for row in rows]


async def keys_by_kek(pool: asyncpg.Pool) -> dict[str, int]:
    rows = await pool.fetch("SELECT kek_id, count(*) AS n FROM subject_keys GROUP BY kek_id")
    return {row["kek_id"]: row["n"] for row in rows}


async def test_rewrap_interrupted_and_resumed_then_the_old_kek_is_removed(
    archive: Archive, people: list[Person]
) -> None:
    a = archive.a
    erased, *live = people
    erased_bodies = messages(erased, "ERASED", 4)
    bodies = [*erased_bodies]
    for n, person in enumerate(live):
        bodies += messages(person, f"LIVE{n}", 3)
    await archive_messages(archive, bodies, a)  # one batch object holds everybody's records
    erased_at = await locations(archive.pool, erased_bodies)
    shared = {loc.object_key for loc in await locations(archive.pool, bodies[len(erased_bodies) :])}
    erased_refs = [
        row["ref"]
        for row in await archive.pool.fetch(
            "SELECT DISTINCT encode(subject_ref, 'hex') AS ref FROM archived_events WHERE event_id = ANY($1::bytea[])",
            binary_keys([e.event_id for e in pipeline.events_of(erased_bodies)]),
        )
    ]
    backup = await archive.pool.fetch(
        "SELECT subject_ref, dek_id, kek_id, wrapped_dek, created_at FROM subject_keys"
        " WHERE subject_ref = ANY($1::text[])",
        erased_refs,
    )
    assert backup, "the erased person had a key"
    async with archive.access(a) as access:
        await erase(access, erased)
    # A restored backup brings the destroyed key back (the suppression list still names it): the rewrap must
    # delete it, not rewrap it.
    await archive.pool.executemany(
        "INSERT INTO subject_keys (subject_ref, dek_id, kek_id, wrapped_dek, created_at) VALUES ($1, $2, $3, $4, $5)",
        [tuple(row.values()) for row in backup],
    )
    assert await keys_by_kek(archive.pool) == {a: len(live) + len(backup)}

    async with archive.access(a, B) as access:
        actions = Actions(access, RetentionMetrics(CollectorRegistry()))
        with pytest.raises(RewrapRefused, match="'kek-c' is not configured"):
            await actions.rewrap_keys(OPERATOR, to_kek_id="kek-c")
        task: asyncio.Task[object]

        def stop_after_two_batches(done: int, total: int) -> None:
            if done == 2:
                task.cancel()  # lands inside the third batch's transaction, which rolls back

        task = asyncio.create_task(
            actions.rewrap_keys(OPERATOR, to_kek_id=B, batch_size=1, progress=stop_after_two_batches)
        )
        with pytest.raises(asyncio.CancelledError):
            await task
        # The two committed batches stay (the restored row deleted, or keys rewrapped); the third rolled back.
        interrupted_counts = await keys_by_kek(archive.pool)
        assert interrupted_counts[a] == len(live) + len(backup) - 2
        assert interrupted_counts[B] in (1, 2)
        # Mid-rewrap, keys under both KEKs: with both configured, everybody reads back.
        for n, person in enumerate(live):
            assert await readable(access, person) == wamids(f"LIVE{n}", 3)

        status = {use.kek_id: use for use in await actions.key_status(OPERATOR)}
        assert (status[B].state, status[a].state) == ("current", "in use")
        report = await actions.rewrap_keys(OPERATOR, to_kek_id=B, batch_size=1)
        assert report.remaining == 0
        assert report.rewrapped + report.suppressed_dropped + 2 == len(live) + len(backup)
        assert {use.kek_id: use.state for use in await actions.key_status(OPERATOR)} == {B: "current", a: "retirable"}
        audit = await archive.pool.fetch(
            "SELECT details FROM audit_log WHERE action = 'keys.rewrap' AND actor = $1 ORDER BY audit_id",
            OPERATOR.name,
        )
        interrupted, finished = (json.loads(row["details"]) for row in audit)
        assert (interrupted["outcome"], interrupted["error"], interrupted["walked"]) == ("failed", "CancelledError", 2)
        assert interrupted["rewrapped"] + interrupted["suppressed_dropped"] == 2
        assert "remaining" not in interrupted
        assert finished == report.to_json()
        assert not any(ref in str(audit) for ref in erased_refs), "the audit row holds counts, not pseudonyms"

    assert await keys_by_kek(archive.pool) == {B: len(live)}
    assert (
        await archive.pool.fetchval(
            "SELECT count(*) FROM subject_keys WHERE subject_ref = ANY($1::text[])", erased_refs
        )
        == 0
    ), "the erased person's key stays destroyed"

    async with archive.access(B) as access:  # A removed from the settings
        for n, person in enumerate(live):
            assert await readable(access, person) == wamids(f"LIVE{n}", 3)
        assert await readable(access, erased) == []
        still_stored = [loc for loc in erased_at if loc.object_key in shared]
        assert still_stored, "the erased person's records share an object with the others"
        assert set((await access.reader.open(still_stored)).values()) == {None}
        actions = Actions(access, RetentionMetrics(CollectorRegistry()))
        assert [use.to_json() for use in await actions.key_status(OPERATOR)] == [
            {"kek_id": B, "keys": len(live), "configured": True, "state": "current"}
        ]

    # A key made under A after all (an archiver still configured with A alone) fails, once A is gone, with an
    # error that names the KEK and nothing else; `keys status` shows it as missing.
    late = Person(erased.waba_id, erased.phone_number_id, "1" + pipeline.digits(10))
    archive.topic = await create_topic(f"127.0.0.1:{archive.demo_env['WA_KAFKA_PORT']}", partitions=1, prefix="late")
    await archive_messages(archive, messages(late, "LATE", 1), a)  # (the first topic's keys are under B now)
    async with archive.access(B) as access:
        with pytest.raises(UnknownKek, match=f"^unknown KEK id '{a}': is the key still configured\\?$"):
            await readable(access, late)
    settings_b = archive.retention_settings(B)
    app = create_admin_app(settings_b, lambda: open_access(settings_b))
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        answer = await client.post(
            "/v1/messages",
            json={"contact": late.wa_id, "reason": "KEK retirement test"},
            headers={"authorization": f"Bearer {pipeline.DPO_TOKEN}"},
        )
    assert answer.status_code == 503
    assert answer.json() == {"detail": f"unknown KEK id '{a}': is the key still configured?"}
    status_b = run_cli(archive.cli_env(B), "keys", "status", "--format", "json")
    assert status_b.returncode == 1, status_b.stderr
    assert {u["kek_id"]: (u["keys"], u["state"]) for u in json.loads(status_b.stdout)} == {
        B: (len(live), "current"),
        a: (1, "missing"),
    }
    refused = run_cli(archive.cli_env(B), "keys", "rewrap", "--to", B)
    assert refused.returncode == 2
    assert f"keys are wrapped by KEK id(s) ['{a}'], which are not configured here" in refused.stderr
    messages_b = run_cli(
        archive.cli_env(B), "messages", "--contact", late.wa_id, "--reason", "KEK retirement test", "--format", "jsonl"
    )
    assert messages_b.returncode == 1
    assert messages_b.stderr.strip().splitlines()[-1] == f"error: unknown KEK id '{a}': is the key still configured?"

    rewrap = run_cli(archive.cli_env(a, B), "keys", "rewrap", "--to", B)
    assert rewrap.returncode == 0, rewrap.stderr
    assert json.loads(rewrap.stdout)["rewrapped"] == 1
    assert f"1 key rewrapped under '{B}'" in rewrap.stderr
    async with archive.access(B) as access:
        assert await readable(access, late) == ["wamid.LATE.0"]


async def test_archivers_and_an_erasure_write_lock_and_shred_keys_while_a_rewrap_runs(
    archive: Archive, people: list[Person]
) -> None:
    a = archive.a
    first, *later = people
    gone = Person(first.waba_id, first.phone_number_id, "1" + pipeline.digits(10))
    gone_bodies = messages(gone, "GONE", 2)
    first_bodies = messages(first, "FIRST", 2)
    await archive_messages(archive, [*first_bodies, *gone_bodies], a)
    first_objects = {loc.object_key for loc in await locations(archive.pool, first_bodies)}
    gone_at = await locations(archive.pool, gone_bodies)
    gone_ref = await archive.pool.fetchval(
        "SELECT DISTINCT encode(subject_ref, 'hex') FROM archived_events WHERE event_id = $1",
        binary_keys([gone_at[0].event_id])[0],
    )
    # Enough keys under A for the rewrap to take a few seconds in batches of 5.
    async with archive.writing_keyring(a) as keyring:
        bulk = [uuid.uuid4().hex * 2 for _ in range(3000)]
        for start in range(0, len(bulk), 500):
            await keyring.keys_for_writing(bulk[start : start + 500])
    before = len(bulk) + 2
    assert await keys_by_kek(archive.pool) == {a: before}
    first_ref = await archive.pool.fetchval(
        "SELECT subject_ref FROM subject_keys WHERE subject_ref <> $1 ORDER BY subject_ref LIMIT 1", gone_ref
    )

    # An archiver's indexing transaction holds the first key row FOR SHARE (Keyring.confirm_live) throughout.
    holder = await asyncpg.connect(archive.dsn_of("ARCHIVER"))
    lock = holder.transaction()
    await lock.start()
    await holder.execute("SELECT 1 FROM subject_keys WHERE subject_ref = $1 FOR SHARE", first_ref)
    try:
        async with archive.access(a, B) as access, archive.archiver(a, B):
            bootstrap = f"127.0.0.1:{archive.demo_env['WA_KAFKA_PORT']}"
            bodies = [body for n, person in enumerate(later) for body in messages(person, f"LATER{n}", 2)]
            events = pipeline.events_of(bodies)
            await pipeline.produce(bootstrap, archive.topic, events[:1])  # the archiver is up and consuming
            await pipeline.wait_indexed(archive.pool, {events[0].event_id})
            actions = Actions(access, RetentionMetrics(CollectorRegistry()))
            rewrap = asyncio.create_task(actions.rewrap_keys(OPERATOR, to_kek_id=B, batch_size=2))
            await erase(access, gone)  # shreds a key the rewrap is walking towards, or has rewrapped
            await pipeline.produce(bootstrap, archive.topic, events[1:])
            await pipeline.wait_indexed(archive.pool, {e.event_id for e in events})
            assert not rewrap.done(), "the archiver wrote while the rewrap ran"
            report = await asyncio.wait_for(rewrap, 120)
    finally:
        await lock.rollback()
        await holder.close()
    # The locked row was skipped at every sweep, not waited for; the new keys were made under B, the current KEK;
    # the erased person's key is gone, whichever came first.
    assert report.remaining == 1
    assert report.sweeps == 2  # the second moved nothing
    assert report.skipped_locked >= 2  # the held row, once per sweep (and the erasure's row, if met mid-delete)
    assert report.after == {a: 1, B: before - 2 + len(later)}
    assert await archive.pool.fetchval("SELECT count(*) FROM subject_keys WHERE subject_ref = $1", gone_ref) == 0
    assert await archive.pool.fetchval("SELECT kek_id FROM subject_keys WHERE subject_ref = $1", first_ref) == a

    async with archive.access(a, B) as access:  # the lock released: the next run takes the row
        resumed = await Actions(access, RetentionMetrics(CollectorRegistry())).rewrap_keys(OPERATOR, to_kek_id=B)
    assert (resumed.rewrapped, resumed.remaining) == (1, 0)
    async with archive.access(B) as access:
        assert await readable(access, first) == wamids("FIRST", 2)
        for n, person in enumerate(later):
            assert await readable(access, person) == wamids(f"LATER{n}", 2)
        assert await readable(access, gone) == []
        shared = [loc for loc in gone_at if loc.object_key in first_objects]  # (the others' objects were deleted)
        assert shared, "the erased person's records share an object with another's"
        assert set((await access.reader.open(shared)).values()) == {None}


async def test_an_archiver_without_the_kek_of_a_person_s_key_waits_and_names_the_kek(
    archive: Archive, people: list[Person], caplog: pytest.LogCaptureFixture
) -> None:
    a = archive.a
    person = people[0]
    await archive_messages(archive, messages(person, "OLD", 1), a)
    later = messages(person, "NEW", 1)
    events = pipeline.events_of(later)
    await pipeline.produce(f"127.0.0.1:{archive.demo_env['WA_KAFKA_PORT']}", archive.topic, events)
    registry = CollectorRegistry()
    settings = pipeline.archiver_settings(archive.demo_env, archive.topic, archive.dlq, archive.prefix).model_copy(
        update={
            "pg": PostgresSettings(dsn=SecretStr(archive.dsn_of("ARCHIVER"))),
            "keys": archive.keys(B),
        }  # A removed too early
    )
    # The batch is retried until the KEK comes back: it cannot be drained at stop, only left uncommitted.
    settings = settings.model_copy(update={"drain_timeout_s": 1})
    async with pipeline.running_archiver(settings, registry):
        deadline = time.monotonic() + 30
        # Well past the tries an unexpected failure gets before its record is dead-lettered (5, within ~1 s here).
        while (registry.get_sample_value("wa_archiver_retries_total", {"dependency": "keys"}) or 0) < 12:
            assert time.monotonic() < deadline, "the archiver did not keep retrying"
            await asyncio.sleep(0.2)
    dead_letters = registry.get_sample_value("wa_archiver_dead_letters_total", {"reason": "unexpected failure"})
    assert not dead_letters, "a configuration to fix, not a record to dead-letter"
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and "KEK" in r.getMessage()]
    assert errors
    assert errors[0].startswith(f"unknown KEK id '{a}': is the key still configured?; retrying in ")
    assert person.wa_id not in "".join(errors)
    new_rows = await archive.pool.fetchval(
        "SELECT count(*) FROM archived_events WHERE event_id = ANY($1::bytea[])", binary_keys([events[0].event_id])
    )
    assert new_rows == 0, "nothing is archived, or committed, without the key"


async def test_a_rewrap_killed_midway_continues_where_it_stopped(archive: Archive) -> None:
    a = archive.a
    async with archive.writing_keyring(a) as keyring:
        refs = [uuid.uuid4().hex * 2 for _ in range(2000)]
        await keyring.keys_for_writing(refs)
        deks = {ref: (await keyring.keys_for_writing([ref]))[ref] for ref in refs[:50]}
    # One key per transaction, so that the kill lands between and inside batches; SIGKILL: no clean-up of any kind.
    command = ["-m", "services.cli", "keys", "rewrap", "--to", B, "--batch-size", "1"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, *command, cwd=REPO_ROOT, env=archive.cli_env(a, B), stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while (await keys_by_kek(archive.pool)).get(B, 0) < 100:
            assert process.returncode is None, "the rewrap ended before it could be killed"
            assert time.monotonic() < deadline, "the rewrap did not start"
            await asyncio.sleep(0.05)
    finally:
        process.kill()
        await process.wait()
    killed_at = await keys_by_kek(archive.pool)
    assert killed_at[a] > 0
    assert killed_at[a] + killed_at[B] == len(refs)

    resumed = run_cli(archive.cli_env(a, B), "keys", "rewrap", "--to", B)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["rewrapped"] == killed_at[a], "the keys already under B were skipped"
    assert report["keys_by_kek_after"] == {B: len(refs)}
    async with archive.access(B) as access:  # the same data keys, under B alone
        for ref, dek in deks.items():
            found = await access.keyring.key_for_reading(ref, dek.dek_id)
            assert found is not None
            assert found.dek == dek.dek
