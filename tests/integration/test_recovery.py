"""Lose PostgreSQL, lose nothing, on the real stack: the data keys and the erasures are kept outside PostgreSQL too.

- A key created and used, then the database lost before any backup held it: `wa-archive recover` restores the key
  from its copy and rebuilds the index; every record reads back byte-exact, the erased person stays erased (also
  after Meta redelivers their webhooks), and their key copies are gone from the bucket.
- A database restored (a real dump, restored) to before an erasure: the erasure is re-applied when the archive is
  opened, before anything is read.
- An erasure whose key copies the store refuses to delete is not reported done; the next run finishes it.

Each test gets a PostgreSQL schema of its own (the `archive` fixture), so it can be dropped as a lost database is.
"""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from devtools.pipeline import Person
from services.core.bucket import ArchiveBucket
from services.core.key_copies import KeyCopies
from services.core.settings import S3Settings
from services.governance.erasure import carry_out, erase_subject
from services.governance.erasure_log import ErasureLog, ErasureRecord
from tests.helpers.erasure import erase, readable
from tests.helpers.kek_archive import (
    Archive,
    archive_messages,
    dump_schema,
    lose_the_database,
    messages,
    recover,
    redeliver,
    restore_schema,
)

pytestmark = pytest.mark.integration


async def subject_refs_of(archive: Archive, person: Person) -> list[str]:
    async with archive.access(archive.a) as access:
        from services.core.identity import resolve_subject_refs

        return await resolve_subject_refs(access.pool, access.pepper, person.wa_id, None)


async def copies_of(archive: Archive, refs: list[str]) -> list[str]:
    """The objects of the key copies that hold a copy of a key of these pseudonyms (current objects, read back)."""
    copies = KeyCopies(ArchiveBucket(archive.retention_settings(archive.a).s3))
    return [
        scanned.name
        async for scanned in copies.scan()
        if isinstance(scanned.copies, list) and any(copy.subject_ref in refs for copy in scanned.copies)
    ]


async def test_a_database_lost_before_any_backup_loses_no_key_and_no_erasure(
    archive: Archive, people: list[Person], pg_dsn: str
) -> None:
    erased, *live = people
    gone = messages(erased, "GONE", 3)
    bodies = [*gone]
    for n, person in enumerate(live):
        bodies += messages(person, f"KEPT{n}", 2)
    await archive_messages(archive, bodies, archive.a)
    erased_refs = await subject_refs_of(archive, erased)
    async with archive.access(archive.a) as access:
        before = {person.wa_id: await readable(access, person) for person in live}
        assert all(len(wamids) == 2 for wamids in before.values())
        assert await copies_of(archive, erased_refs), "every key has its copy outside PostgreSQL"
        await erase(access, erased)
    assert await copies_of(archive, erased_refs) == [], "the erasure destroyed the key copies too"

    await lose_the_database(archive, pg_dsn)
    report = recover(archive, pg_dsn)

    assert report["erasures_reapplied"] == 1
    assert report["keys_restored"] == len(live)
    assert report["unreadable_key_copies"] == 0
    seconds = report["seconds"]
    assert isinstance(seconds, dict)
    assert set(seconds) == {"erasures", "keys", "chain", "index", "copies"}
    async with archive.access(archive.a) as access:
        assert {person.wa_id: await readable(access, person) for person in live} == before
        assert await readable(access, erased) == []
    # Meta redelivers the erased person's webhooks, byte for byte: the archive drops them, as before the loss.
    await redeliver(archive, gone)
    async with archive.access(archive.a) as access:
        assert await readable(access, erased) == []
    # A second run finds nothing to do.
    again = recover(archive, pg_dsn)
    assert (again["erasures_reapplied"], again["keys_restored"]) == (0, 0)


async def test_a_restore_to_before_an_erasure_is_erased_again_before_any_read(
    archive: Archive, people: list[Person], pg_dsn: str, tmp_path: object
) -> None:
    erased, kept = people[:2]
    await archive_messages(archive, [*messages(erased, "LATER-GONE", 2), *messages(kept, "STAYS", 2)], archive.a)
    dump = dump_schema(archive, pg_dsn)
    async with archive.access(archive.a) as access:
        await erase(access, erased)
    # The backup taken before the erasure is restored over the schema.
    await restore_schema(archive, pg_dsn, dump)
    restored = await archive.pool.fetchval("SELECT count(*) FROM erasure_requests")
    assert restored == 0, "the restored database does not know the erasure"

    async with archive.access(archive.a) as access:  # opening the archive re-applies it
        assert await readable(access, erased) == []
        assert await readable(access, kept) == ["wamid.STAYS.0", "wamid.STAYS.1"]
        status = await access.pool.fetchval("SELECT status FROM erasure_requests")
    assert status == "completed"
    audit = await archive.pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'erasure.reapplied'")
    assert audit == 1

    # The two keys shared a bundle of copies: the erasure wrote the kept person's again, in a bundle the restored
    # database does not list, before deleting the shared one. Erasing them now still destroys that copy.
    kept_refs = await subject_refs_of(archive, kept)
    assert await copies_of(archive, kept_refs), "the kept person's key has its copy"
    async with archive.access(archive.a) as access:
        await erase(access, kept)
    assert await copies_of(archive, kept_refs) == [], "no copy of an erased key is left behind by a restore"


async def test_an_erasure_is_not_done_while_the_store_keeps_a_key_copy(
    archive: Archive, people: list[Person], demo_env: dict[str, str]
) -> None:
    person = people[0]
    await archive_messages(archive, messages(person, "COPIED", 2), archive.a)
    refs = await subject_refs_of(archive, person)
    request_ref = f"GDPR-{uuid.uuid4().hex[:8]}"
    # The console's identity may read the bucket, never delete: the store refuses to delete the key copies.
    reading_only = ArchiveBucket(
        S3Settings(
            endpoint_url=archive.retention_settings(archive.a).s3.endpoint_url,
            access_key=demo_env["WA_CONSOLE_S3__ACCESS_KEY"],
            secret_key=SecretStr(demo_env["WA_CONSOLE_S3__SECRET_KEY"]),
            bucket=archive.retention_settings(archive.a).s3.bucket,
            prefix=archive.prefix,
        )
    )
    async with archive.access(archive.a) as access:
        outcome = await erase_subject(
            access.pool,
            access.keyring,
            reading_only,
            access.pepper,
            contact=person.wa_id,
            phone_number_id=None,
            request_ref=request_ref,
            actor="dpo",
        )
        assert outcome.status == "in_progress"
        assert outcome.keys_destroyed, "the keys are destroyed at once"
        assert await readable(access, person) == []
        assert await copies_of(archive, refs), "the copies are still there"
        status = await access.pool.fetchval("SELECT status FROM erasure_requests WHERE request_ref = $1", request_ref)
        assert status == "in_progress"
        # The next run, with an identity that may delete, finishes it.
        done = await carry_out(access.pool, access.keyring, access.bucket, request_ref, actor="scheduler")
        assert done is not None
        assert done.status == "completed"
    assert await copies_of(archive, refs) == []
    records = [r async for r in ErasureLog(ArchiveBucket(archive.retention_settings(archive.a).s3)).scan()]
    mine = [r for r in records if isinstance(r, ErasureRecord) and r.request_ref == request_ref]
    assert len(mine) == 1
    assert sorted(mine[0].subject_refs) == sorted(refs)
    assert {dek_id for _, dek_id in mine[0].keys} == set(outcome.keys_destroyed)


async def test_a_key_the_restored_database_lacks_keeps_its_copy_until_recover(
    archive: Archive, people: list[Person], pg_dsn: str
) -> None:
    """Collecting the copies (what a KEK rewrap ends with) on a database restored to before a key existed deletes
    nothing that holds it, even once the members list it: the copy is the only place that key is until ``recover``
    reads it."""
    early, late = people[:2]
    await archive_messages(archive, messages(early, "EARLY", 1), archive.a)
    dump = dump_schema(archive, pg_dsn)
    await archive_messages(archive, messages(late, "LATE", 2), archive.a)
    late_refs = await subject_refs_of(archive, late)
    held = await copies_of(archive, late_refs)
    assert held, "the late person's key has its copy"
    await restore_schema(archive, pg_dsn, dump)

    copies = KeyCopies(ArchiveBucket(archive.retention_settings(archive.a).s3))
    async with archive.pool.acquire() as conn:
        # An erasure on the restored database lists what the bucket holds first (the bundle is newer than any it
        # knows), so the late person's bundle is among the members, its key unknown to the database.
        assert await copies.behind(conn)
        await copies.sync_members(conn)
        await copies.collect(conn)
    assert await copies_of(archive, late_refs) == held, "nothing holding a key the database lacks is deleted"
    recover(archive, pg_dsn)
    async with archive.access(archive.a) as access:
        assert await readable(access, late) == ["wamid.LATE.0", "wamid.LATE.1"]
