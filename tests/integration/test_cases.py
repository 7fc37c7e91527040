"""Cases against the real stack (services/actions/cases.py, services/governance/cases.py): the holds a case places
keep retention and erasure away from its custodians until it is closed; its notes are sealed under the person's key
and go with the person; every step is in the audit log; a reviewer sees only the cases assigned to them."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg
import orjson
import pytest
from prometheus_client import CollectorRegistry

from devtools import pipeline
from devtools.pipeline import Person
from services.actions.access import ArchiveAccess
from services.actions.layer import Actions, Forbidden, NotFound, Operator
from services.core.crypto import open_record
from services.core.identity import resolve_subject_refs
from services.core.index import binary_keys
from services.evidence.case_export import NOTHING_IN_PERIOD
from services.governance.cases import CaseRefused, CustodianSpec, Incident, note_record_id
from services.governance.holds import held_objects
from services.governance.metrics import RetentionMetrics
from services.governance.retention_run import retention_run
from tests.helpers.approvals import ERASE_WHY, REQUESTER, SECOND_DPO, approved, approved_in_cli
from tests.helpers.archive_runs import NOW, archive
from tests.helpers.erasure import erase
from tests.helpers.kek_archive import Archive as KekArchive
from tests.helpers.kek_archive import B, archive_messages, dump_schema, messages, restore_schema
from tests.helpers.support import run_cli

pytestmark = pytest.mark.integration

TEN_YEARS_AGO = NOW - 10 * 365 * 86400
DPO = Operator("dpo-of-test-cases", "dpo")


@pytest.fixture
async def actions(access: ArchiveAccess) -> Actions:
    return Actions(access, RetentionMetrics(CollectorRegistry()))


async def objects_of(pool: asyncpg.Pool, refs: list[str]) -> set[str]:
    rows = await pool.fetch(
        "SELECT DISTINCT object_key FROM archived_events WHERE subject_ref = ANY($1::bytea[])", binary_keys(refs)
    )
    return {row["object_key"] for row in rows}


async def record(pool: asyncpg.Pool, sql: str, *args: object) -> asyncpg.Record:
    row = await pool.fetchrow(sql, *args)
    assert row is not None
    return row


async def held(pool: asyncpg.Pool, object_keys: set[str]) -> set[str]:
    async with pool.acquire() as conn:
        return await held_objects(conn, sorted(object_keys))


async def message_id_of(pool: asyncpg.Pool, refs: list[str]) -> str:
    event_id: str = await pool.fetchval(
        "SELECT encode(event_id, 'hex') FROM archived_events WHERE subject_ref = ANY($1::bytea[]) AND kind = 'message'"
        " ORDER BY event_time LIMIT 1",
        binary_keys(refs),
    )
    return event_id


async def test_a_case_holds_its_custodians_until_it_is_closed(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, prefix: str, access: ArchiveAccess, actions: Actions
) -> None:
    alice = Person.fresh()
    bob = Person(alice.waba_id, alice.phone_number_id, "1" + pipeline.digits(10))
    outsider = Person(alice.waba_id, alice.phone_number_id, "1" + pipeline.digits(10))
    # Every record expired ten years ago: retention would delete their objects.
    await archive(
        demo_env,
        pg_pool,
        prefix,
        [
            pipeline.text_message(alice, "wamid.A1", "refund ref 4711", TEN_YEARS_AGO),
            pipeline.text_message(bob, "wamid.B1", "ship it", TEN_YEARS_AGO),
            pipeline.text_message(outsider, "wamid.O1", "hello", TEN_YEARS_AGO),
        ],
    )
    alice_refs = await resolve_subject_refs(pg_pool, access.pepper, alice.wa_id, None)
    bob_refs = await resolve_subject_refs(pg_pool, access.pepper, bob.wa_id, alice.phone_number_id)
    alice_objects, bob_objects = await objects_of(pg_pool, alice_refs), await objects_of(pg_pool, bob_refs)
    assert alice_objects
    assert bob_objects

    reviewer = Operator(f"reviewer-{pipeline.digits(6)}", "reader")
    stranger = Operator(f"stranger-{pipeline.digits(6)}", "reader")
    with pytest.raises(Forbidden):
        await actions.open_case(reviewer, title="not theirs to open")
    opened = await actions.open_case(
        DPO,
        title="Refund dispute of a customer",
        custodians=[
            CustodianSpec(kind="person", contact=alice.wa_id),
            CustodianSpec(kind="person", subject_ref=bob_refs[0]),
        ],
        with_holds=True,
        incident=Incident(what_deleted="the refund approval", deleted_by="the customer", communicated="nothing yet"),
        reviewers=[reviewer.name],
    )
    case_ref = opened.case_ref
    assert case_ref.startswith("CASE-")
    holds = await pg_pool.fetch("SELECT * FROM legal_holds WHERE case_ref = $1 AND released_at IS NULL", case_ref)
    assert len(holds) == 2
    # The title and the incident are not in the database in clear.
    row = await record(pg_pool, "SELECT sealed_title, sealed_incident FROM cases WHERE case_ref = $1", case_ref)
    assert b"Refund" not in bytes(row["sealed_title"])
    assert b"refund approval" not in bytes(row["sealed_incident"])

    # Retention leaves what the case holds, and an erasure of a custodian waits for the case.
    assert await held(pg_pool, alice_objects | bob_objects) == alice_objects | bob_objects
    dry = await retention_run(access.pool, access.bucket, dry_run=True)
    assert set(dry.candidates) & (alice_objects | bob_objects) == set()
    erasure = await approved(
        actions,
        actions.request_erasure(
            REQUESTER, contact=alice.wa_id, request_ref=f"GDPR-{pipeline.digits(8)}", reason=ERASE_WHY
        ),
        approver=DPO,
    )
    assert (erasure.status, erasure.blocked_by) == ("blocked", [case_ref])

    # The reviewer assigned to it tags and notes messages of its custodians; nobody else sees it.
    alice_message, bob_message = await message_id_of(pg_pool, alice_refs), await message_id_of(pg_pool, bob_refs)
    outsider_refs = await resolve_subject_refs(pg_pool, access.pepper, outsider.wa_id, alice.phone_number_id)
    assert [c.case_ref for c in await actions.cases(reviewer)] == [case_ref]
    assert await actions.cases(stranger) == []
    with pytest.raises(NotFound):
        await actions.note_message(stranger, case_ref, event_id=alice_message, text="not assigned")
    assert await actions.tag_message(reviewer, case_ref, event_id=alice_message, tag="Relevant") is True
    assert await actions.tag_message(reviewer, case_ref, event_id=alice_message, tag="relevant") is False
    with pytest.raises(CaseRefused):
        await actions.tag_message(reviewer, case_ref, event_id=alice_message, tag="she said the refund was ok")
    with pytest.raises(CaseRefused):
        await actions.tag_message(reviewer, case_ref, event_id=await message_id_of(pg_pool, outsider_refs), tag="x")
    alice_note = await actions.note_message(
        reviewer, case_ref, event_id=alice_message, text="Alice says ref 4711 was approved"
    )
    await actions.note_message(reviewer, case_ref, event_id=bob_message, text="Bob promised shipping")
    sealed = await record(pg_pool, "SELECT * FROM case_notes WHERE note_id = $1::uuid", alice_note)
    assert b"4711" not in bytes(sealed["sealed_note"])
    search = await actions.save_search(reviewer, case_ref, keywords="refund 4711")
    hits = await actions.run_saved_search(reviewer, case_ref, search.search_id)
    assert [hit.event_id for hit in hits] == [alice_message]

    shown = await actions.case(reviewer, case_ref)
    assert shown.summary.title == "Refund dispute of a customer"
    assert shown.incident is not None
    assert shown.incident.what_deleted == "the refund approval"
    assert [c.hold_active for c in shown.custodians] == [True, True]
    # A person resolved under every business number is shown by the pseudonym their records are under.
    assert await message_id_of(pg_pool, [shown.custodians[0].subject_refs[0]]) == alice_message
    notes = {m.event_id: ([n.text for n in m.notes], m.tags) for m in shown.messages}
    assert notes == {
        alice_message: (["Alice says ref 4711 was approved"], ["relevant"]),
        bob_message: (["Bob promised shipping"], []),
    }

    # Closing releases the holds: the erasure it blocked completes, retention may delete Bob's expired object.
    with pytest.raises(Forbidden):
        await actions.request_case_close(reviewer, case_ref, reason="review done")
    closing = await approved(actions, actions.request_case_close(DPO, case_ref, reason="settled with the customer"))
    assert sorted(h.hold_id for h in closing.holds) == sorted(str(h["hold_id"]) for h in holds)
    assert [(e.request_ref, e.status) for e in closing.erasures] == [(erasure.request_ref, "completed")]
    assert (
        await pg_pool.fetchval("SELECT count(*) FROM legal_holds WHERE case_ref = $1 AND released_at IS NULL", case_ref)
        == 0
    )
    assert await held(pg_pool, bob_objects) == set()
    dry = await retention_run(access.pool, access.bucket, dry_run=True)
    assert bob_objects <= set(dry.candidates)

    # Alice's note: its key is shredded (the copy kept above no longer opens) and its row is gone; Bob's stays.
    assert await access.keyring.key_for_reading(sealed["subject_ref"], str(sealed["dek_id"])) is None
    assert (
        await pg_pool.fetchval("SELECT count(*) FROM case_notes WHERE subject_ref = ANY($1::text[])", alice_refs) == 0
    )
    after = await actions.case(DPO, case_ref)
    assert [([n.text for n in m.notes], m.tags) for m in after.messages] == [
        ([], ["relevant"]),
        (["Bob promised shipping"], []),
    ]
    bob_key = await access.keyring.live_key(bob_refs[0])
    assert bob_key is not None
    bob_row = await record(pg_pool, "SELECT * FROM case_notes WHERE subject_ref = $1", bob_refs[0])
    assert (
        open_record(
            bytes(bob_row["sealed_note"]),
            bob_key.dek,
            event_id=note_record_id(str(bob_row["note_id"])),
            subject_ref=bob_refs[0],
        )
        == b"Bob promised shipping"
    )
    with pytest.raises(CaseRefused):
        await actions.note_message(DPO, case_ref, event_id=bob_message, text="after the close")

    actions_logged = [
        r["action"]
        for r in await pg_pool.fetch(
            "SELECT action FROM audit_log WHERE reason = $1 OR details->>'case_ref' = $1 ORDER BY audit_id", case_ref
        )
    ]
    assert actions_logged == [
        "case.opened",
        "hold.create",
        "case.custodian_added",
        "hold.create",
        "case.custodian_added",
        "case.reviewer_assigned",
        "case.message_tagged",
        "case.note_added",
        "case.note_added",
        "case.search_saved",
        "case.viewed",
        "case.viewed",
        "hold.release",
        "hold.release",
        "case.closed",
        "case.viewed",
    ]
    # No title, note, incident nor search words in the audit log (hex ids may hold any digits: words only).
    logged = await pg_pool.fetch("SELECT details::text AS details FROM audit_log WHERE reason = $1", case_ref)
    assert not [r for r in logged if any(word in r["details"] for word in ("Refund", "approved", "shipping", "refund"))]


async def test_the_cli_runs_the_same_case_actions(
    pg_pool: asyncpg.Pool, prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WA_RETENTION_S3__PREFIX", prefix)
    monkeypatch.setenv("WA_RETENTION_OPERATOR", "cli-dpo-of-test-cases")
    number, person = Person.fresh(), Person.fresh()
    ref = f"LIT-{pipeline.digits(8)}"
    code, out, err = await run_cli(
        [
            "case",
            "open",
            "--ref",
            ref,
            "--title",
            "[red]Supplier dispute",
            "--number",
            number.phone_number_id,
            "--with-holds",
            "--since",
            "2026-01-01",
            "--deleted-what",
            "a quote",
        ],
        capsys,
    )
    assert code == 0, err
    assert orjson.loads(out)["case_ref"] == ref
    code, out, err = await run_cli(["case", "open", "--ref", ref, "--title", "again"], capsys)
    assert (code, "exists already" in err) == (2, True)

    code, out, err = await run_cli(["case", "add-custodian", ref, "--contact", person.wa_id], capsys)
    assert code == 0, err
    assert orjson.loads(out)["kind"] == "person"
    assert (await run_cli(["case", "assign", ref, "reviewer-x"], capsys))[0] == 0
    code, out, err = await run_cli(["case", "list"], capsys)
    assert code == 0, err
    assert ref in out
    assert "[red]Supplier dispute" in out  # the title is text, not markup
    code, out, err = await run_cli(["case", "show", ref, "--format", "json"], capsys)
    assert code == 0, err
    shown = orjson.loads(out)
    assert (shown["title"], shown["incident"]["what_deleted"], shown["reviewers"]) == (
        "[red]Supplier dispute",
        "a quote",
        ["reviewer-x"],
    )
    assert [(c["kind"], c["hold_active"]) for c in shown["custodians"]] == [("phone_number", True), ("person", True)]

    code, _out, err = await run_cli(["case", "tag", ref, "0" * 32, "relevant"], capsys)
    assert (code, "no archived message" in err) == (2, True)
    assert (await run_cli(["case", "show", "NO-SUCH-CASE"], capsys))[0] == 1
    code, closing, err = await approved_in_cli(["case", "close", ref, "--reason", "settled"], capsys, monkeypatch)
    assert code == 0, err
    assert len(closing["holds_released"]) == 2
    assert (
        await pg_pool.fetchval("SELECT count(*) FROM legal_holds WHERE case_ref = $1 AND released_at IS NULL", ref) == 0
    )
    closed = await pg_pool.fetchrow(
        "SELECT actor, reason, details::text AS details FROM audit_log WHERE action = 'case.closed'"
        " AND details->>'case_ref' = $1",
        ref,
    )
    assert closed is not None
    # Closed by the DPO who approved it, on behalf of the one who asked.
    assert (closed["actor"], closed["reason"]) == (SECOND_DPO.name, "settled")
    approval = orjson.loads(closed["details"])["approval"]
    assert (approval["requester"], approval["approver"]) == ("cli-dpo-of-test-cases", SECOND_DPO.name)


async def test_a_case_key_is_rewrapped_with_the_subject_keys_before_its_kek_is_retired(archive: KekArchive) -> None:
    a = archive.a
    async with archive.access(a) as access:
        opened = await Actions(access, RetentionMetrics(CollectorRegistry())).open_case(
            DPO, title="Dispute under the old KEK", custodians=[CustodianSpec(kind="phone_number", phone_number_id="1")]
        )
    async with archive.access(a, B) as access:
        actions = Actions(access, RetentionMetrics(CollectorRegistry()))
        # The old KEK wraps no subject key here, but the case's: it is still in use, not retirable.
        assert [(u.kek_id, u.keys, u.state) for u in await actions.key_status(DPO)] == [
            (B, 0, "current"),
            (a, 1, "in use"),
        ]
        report = await actions.rewrap_keys(DPO, to_kek_id=B)
        assert report.case_keys_rewrapped == 1
        assert [(u.kek_id, u.state) for u in await actions.key_status(DPO)] == [(B, "current"), (a, "retirable")]
    async with archive.access(B) as access:  # the old KEK removed from the settings
        shown = await Actions(access, RetentionMetrics(CollectorRegistry())).case(DPO, opened.case_ref)
        assert shown.summary.title == "Dispute under the old KEK"


async def test_a_restore_to_before_an_erasure_deletes_the_persons_notes_again(
    archive: KekArchive, people: list[Person], pg_dsn: str
) -> None:
    erased, kept = people[:2]
    await archive_messages(archive, [*messages(erased, "NOTED-GONE", 1), *messages(kept, "NOTED-STAYS", 1)], archive.a)
    async with archive.access(archive.a) as access:
        actions = Actions(access, RetentionMetrics(CollectorRegistry()))
        case = await actions.open_case(
            DPO,
            title="Before the restore",
            custodians=[CustodianSpec(kind="phone_number", phone_number_id=erased.phone_number_id)],
        )
        for person in (erased, kept):
            refs = await resolve_subject_refs(archive.pool, access.pepper, person.wa_id, person.phone_number_id)
            await actions.note_message(DPO, case.case_ref, event_id=await message_id_of(archive.pool, refs), text="x")
    dump = dump_schema(archive, pg_dsn)
    async with archive.access(archive.a) as access:
        await erase(access, erased)
    assert await archive.pool.fetchval("SELECT count(*) FROM case_notes") == 1
    await restore_schema(archive, pg_dsn, dump)
    assert await archive.pool.fetchval("SELECT count(*) FROM case_notes") == 2, "the backup has both notes"

    async with archive.access(archive.a) as access:  # opening the archive re-applies the erasure
        shown = await Actions(access, RetentionMetrics(CollectorRegistry())).case(DPO, case.case_ref)
    assert [[n.text for n in m.notes] for m in shown.messages] == [["x"]]
    assert await archive.pool.fetchval("SELECT count(*) FROM case_notes") == 1


async def test_a_case_exports_a_signed_bag_per_person_and_a_signed_listing(
    pg_pool: asyncpg.Pool,
    prefix: str,
    demo_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("WA_RETENTION_S3__PREFIX", prefix)
    monkeypatch.setenv("WA_RETENTION_OPERATOR", "cli-dpo-of-case-export")
    first, second = Person.fresh(), Person.fresh()
    t = NOW - 600
    await archive(
        demo_env,
        pg_pool,
        prefix,
        [
            pipeline.text_message(first, "wamid.CX1", "FIRST-PERSON the invoice is wrong", t),
            pipeline.revoke(first, "wamid.CX1R", "wamid.CX1", t + 30),
            pipeline.text_message(second, "wamid.CX2", "SECOND-PERSON where is my parcel", t + 60),
        ],
    )
    ref = f"EXP-{pipeline.digits(8)}"
    opened = [
        "case", "open", "--ref", ref, "--title", "Invoice dispute", "--contact", first.wa_id,
        "--contact", second.wa_id, "--number", Person.fresh().phone_number_id,
    ]  # fmt: skip
    code, _out, err = await run_cli(opened, capsys)
    assert code == 0, err
    out = tmp_path / "case"
    # No PDF: its rendering is tested with the package (tests/integration/test_evidence_export.py) and costs
    # seconds per bag here.
    asked = [
        "case", "export", ref, "--out", str(out), "--reason", "court order 12", "--language", "fr",
        "--formats", "jsonl,json,rsmf",
    ]  # fmt: skip
    code, exported, err = await approved_in_cli(
        asked,
        capsys,
        monkeypatch,
    )
    assert code == 0, err
    assert len(exported["bags"]) == 2
    # A business number the archive holds nothing of in the period: listed, with why (tests/integration/
    # test_case_custodians.py exports one that has conversations).
    assert [(s["kind"], s["why"]) for s in exported["skipped"]] == [("phone_number", NOTHING_IN_PERIOD)]
    # Each bag holds its own person's events only, deletion included.
    texts = {}
    for bag in exported["bags"]:
        events = (Path(bag) / "data" / "events.jsonl").read_text()
        texts[Path(bag).name] = events
        assert ("FIRST-PERSON" in events) != ("SECOND-PERSON" in events)
    assert any("wamid.CX1R" in events for events in texts.values())
    assert not list(out.glob("*/data/*.pdf"))
    listing = orjson.loads((out / "case.json").read_bytes())
    assert (listing["case_ref"], len(listing["bags"])) == (ref, 2)
    # The whole export verifies; a bag left out, a listing altered or a file of a bag altered is reported.
    code, _out, err = await run_cli(["verify-export", str(out)], capsys)
    assert code == 0, err
    shutil.copytree(out, tmp_path / "altered")
    (tmp_path / "altered" / "case.json").write_bytes((out / "case.json").read_bytes().replace(b'"EXP-', b'"XXX-'))
    code, _out, err = await run_cli(["verify-export", str(tmp_path / "altered")], capsys)
    assert (code, "case.json.sig: the signature of case.json does not verify" in err) == (1, True)
    shutil.copytree(out, tmp_path / "missing")
    shutil.rmtree(tmp_path / "missing" / Path(exported["bags"][0]).name)
    code, _out, err = await run_cli(["verify-export", str(tmp_path / "missing")], capsys)
    assert (code, "a bag the case export lists is missing" in err) == (1, True)
    shutil.copytree(out, tmp_path / "edited")
    edited = tmp_path / "edited" / Path(exported["bags"][1]).name / "data" / "events.jsonl"
    edited.write_text(edited.read_text().replace("wamid", "wamix"))
    code, _out, err = await run_cli(["verify-export", str(tmp_path / "edited")], capsys)
    assert (code, "data/events.jsonl: sha256 mismatch" in err) == (1, True)
    # Refused before anything is read: a folder that is not empty.
    code, _out, err = await run_cli(["case", "export", ref, "--out", str(out), "--reason", "again"], capsys)
    assert (code, "is not empty" in err) == (2, True)
