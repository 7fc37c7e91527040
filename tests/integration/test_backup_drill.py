"""The restore drill, on the real stack: PostgreSQL lost, restored from its barman-cloud backups, nothing lost.

A PostgreSQL server of the test's own (tests/pg_drill.py: own data directory and port, archiving every WAL segment
to the local S3 as stack.sh's server does) holds the archive's index and keys. Messages of several people are
archived; a base backup is taken; more are archived (new people, so new keys); one person who existed before the
backup and one created after it are erased. Then the server is killed and its data directory deleted, and the
archive is restored twice: to the latest archived WAL, and from the base backup alone (as if every WAL segment
after it were lost too). After each restore `wa-archive recover` runs, and then:

- every message of every other person reads back byte-exact (the CLI's JSON lines equal those before the loss),
  also the messages whose keys were created after the base backup (restored from their key copies);
- both erased persons are unreadable by every path: the read side, the CLI, the admin API, the console, the export,
  and after
  `wa-archive rebuild-index`; Meta redelivering their webhooks archives nothing readable.

Each step's duration is printed (``-s`` shows it); docs/OPERATIONS.md quotes them.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from devtools import pipeline
from devtools.broker import create_topic
from devtools.pipeline import Person
from devtools.serving import serve_asgi
from services.actions.access import ArchiveAccess, open_access
from services.backups.barman import RecoveryTarget
from services.console.factory import create_console_app
from services.console.settings import ConsoleSettings
from services.core.pseudonym import subject_ref
from services.core.schema import connect_pool, migrate_dsn
from services.core.settings import PostgresSettings
from services.retention.api import create_admin_app
from services.review.conversation import load_conversation
from tests.helpers.erasure import erase, readable
from tests.helpers.kek_archive import Archive, archive_messages, messages, redeliver, run_cli
from tests.pg_drill import DrillServer, drill_server

# About 2 minutes on the 2-core machine under other test runs (most of it barman-cloud's and PostgreSQL's start-ups);
# the suite's 120 s default would cut it.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

SCHEMA = "drill"
REASON = "restore drill"


@pytest.fixture
async def server(demo_env: dict[str, str]) -> AsyncIterator[DrillServer]:
    async with drill_server(demo_env) as started:
        yield started


async def open_archive(server: DrillServer, kafka_bootstrap: str, prefix: str, topic: str | None) -> Archive:
    """The archive's view of the drill server: its schema, a topic, the test's bucket prefix."""
    pool = await connect_pool(f"{server.owner_dsn()}?search_path={SCHEMA}", min_size=1, max_size=4)
    if topic is None:
        topic = await create_topic(kafka_bootstrap, partitions=1, prefix="drill")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="drill-dlq")
    return Archive(server.service_env(), SCHEMA, pool, topic, dlq, prefix)


def conversation_lines(archive: Archive, person: Person) -> str:
    """The CLI's JSON lines of a person's conversation: the bytes an operator gets."""
    done = run_cli(
        archive.cli_env(archive.a), "messages", "--contact", person.wa_id, "--reason", REASON, "--format", "jsonl"
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def export_text(archive: Archive, person: Person, out: Path) -> str:
    done = run_cli(
        archive.cli_env(archive.a), "export", "--contact", person.wa_id, "--reason", REASON,
        "--format", "json", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return "".join(Path(line).read_text(encoding="utf-8") for line in done.stdout.split())


async def api_messages(archive: Archive, person: Person) -> list[str]:
    settings = archive.retention_settings(archive.a)
    app = create_admin_app(settings, lambda: open_access(settings))
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        answer = await client.post(
            "/v1/messages",
            json={"contact": person.wa_id, "reason": REASON},
            headers={"authorization": f"Bearer {pipeline.DPO_TOKEN}"},
        )
    assert answer.status_code == 200, answer.text
    return sorted(m.get("message_id") or "" for m in answer.json()["messages"])


async def console_page(archive: Archive, person: Person) -> str:
    """The person's conversation as the review console shows it to the DPO, once the reason is given (the console
    with its own database role, on the restored server)."""
    settings = archive.retention_settings(archive.a)
    console_settings = ConsoleSettings(
        secure_cookies=False, pg=PostgresSettings(dsn=SecretStr(archive.dsn_of("CONSOLE")))
    )
    app = create_console_app(
        console_settings,
        settings,
        lambda: open_access(console_settings.archive_settings(settings)),
        registry=CollectorRegistry(),
        serve_ops=False,
    )
    ref = subject_ref(settings.keys.pepper_bytes(), person.phone_number_id, person.wa_id)
    async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
        signin = await client.get("/signin")
        token = re.search(r'name="signin_token" value="([^"]+)"', signin.text)
        assert token
        dpo = {"signin_token": token.group(1), "name": "test-dpo", "token": pipeline.DPO_TOKEN}
        assert (await client.post("/signin", data=dpo)).status_code == 303
        csrf = re.search(r'name="csrf" value="([^"]+)"', (await client.get("/search")).text)
        assert csrf
        opened = await client.post(
            "/conversation/reason", data={"csrf": csrf.group(1), "subject_ref": ref, "reason": REASON}
        )
        assert opened.status_code in (200, 404), opened.text
        return opened.text


def recover(archive: Archive) -> dict[str, object]:
    env = {**archive.cli_env(archive.a), "WA_MIGRATOR_PG__DSN": archive.dsn_of("MIGRATOR")}
    done = run_cli(env, "recover")
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report


@dataclass
class Drill:
    """What the drill archived before the loss, and what it must find after each restore."""

    server: DrillServer
    kafka_bootstrap: str
    prefix: str
    topic: str
    backup_id: str
    before: dict[str, list[dict[str, object]]]  # wa_id -> the decrypted conversation before the loss
    kept: list[Person]
    kept_after_backup: list[Person]
    erased: list[Person]
    erased_bodies: list[bytes]
    out: Path
    timings: dict[str, float] = field(default_factory=dict)

    def timed(self, step: str, started: float) -> None:
        self.timings[step] = time.monotonic() - started


async def test_restore_drill(
    server: DrillServer, kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    drill = await archive_then_erase(server, kafka_bootstrap, tmp_path)
    try:
        for target in ("latest", "base"):
            await lose_restore_recover(drill, target)
    finally:
        with capsys.disabled():
            print("\nrestore drill timings:")
            for step, seconds in drill.timings.items():
                print(f"  {step:<66} {seconds:6.1f} s")


async def archive_then_erase(server: DrillServer, kafka_bootstrap: str, tmp_path: Path) -> Drill:
    """Archive, back up, archive more, erase one person from before the backup and one from after it."""
    admin = await asyncpg.connect(server.owner_dsn())
    await admin.execute(f"CREATE SCHEMA {SCHEMA}")
    await admin.close()
    await migrate_dsn(f"{server.owner_dsn()}?search_path={SCHEMA}")
    prefix = f"test/drill-{uuid.uuid4().hex[:8]}"
    archive = await open_archive(server, kafka_bootstrap, prefix, None)
    first = Person.fresh()
    people = [first, *(Person(first.waba_id, first.phone_number_id, "1" + pipeline.digits(10)) for _ in range(5))]
    erased_before, kept_before, erased_after, kept_after = people[0], people[1:3], people[3], people[4:]
    timings: dict[str, float] = {}
    try:
        erased_bodies = messages(erased_before, "GONE-BEFORE", 2)
        bodies = [*erased_bodies]
        for n, person in enumerate(kept_before):
            bodies += messages(person, f"OLD{n}", 3)
        await archive_messages(archive, bodies, archive.a)

        started = time.monotonic()
        backup_id = server.base_backup()
        timings["base backup (barman-cloud-backup)"] = time.monotonic() - started

        bodies = messages(erased_after, "GONE-AFTER", 2)
        erased_bodies += bodies
        for n, person in enumerate(kept_after):
            bodies += messages(person, f"NEW{n}", 3)
        bodies += messages(kept_before[0], "OLD-MORE", 2)  # a person from before the backup writes again
        await archive_messages(archive, bodies, archive.a)
        async with archive.access(archive.a) as access:
            await erase(access, erased_before)
            await erase(access, erased_after)
            kept = [*kept_before, *kept_after]
            before = {person.wa_id: await conversation(access, person) for person in kept}
        assert all(len(messages_) >= 3 for messages_ in before.values())
        started = time.monotonic()
        await server.archive_current_wal()
        timings["last WAL segment archived (pg_switch_wal)"] = time.monotonic() - started
    finally:
        await archive.pool.close()
    drill = Drill(
        server=server,
        kafka_bootstrap=kafka_bootstrap,
        prefix=prefix,
        topic=archive.topic,
        backup_id=backup_id,
        before=before,
        kept=kept,
        kept_after_backup=kept_after,
        erased=[erased_before, erased_after],
        erased_bodies=erased_bodies,
        out=tmp_path,
    )
    drill.timings.update(timings)
    return drill


async def conversation(access: ArchiveAccess, person: Person) -> list[dict[str, object]]:
    """A person's conversation as the CLI and the API print it (decrypted, every field)."""
    found = await load_conversation(
        access.pool, access.reader, access.pepper, contact=person.wa_id, phone_number_id=None, actor="drill",
        reason=REASON,
    )  # fmt: skip
    return [message.to_json() for message in found.messages]


async def lose_restore_recover(drill: Drill, target: RecoveryTarget) -> None:
    server = drill.server
    started = time.monotonic()
    server.destroy()
    drill.timed(f"{target}: server killed, data directory deleted", started)
    assert not server.data.exists()

    started = time.monotonic()
    server.restore(drill.backup_id, target)
    await server.wait_promoted()
    drill.timed(f"{target}: restore (barman-cloud-restore, WAL replay, promotion)", started)

    archive = await open_archive(server, drill.kafka_bootstrap, drill.prefix, drill.topic)
    try:
        started = time.monotonic()
        report = recover(archive)
        drill.timed(f"{target}: wa-archive recover", started)
        assert (report["unreadable_key_copies"], report["unreadable_erasure_records"]) == (0, 0), report
        if target == "base":
            # The base backup knows neither the later people's keys nor the erasures: both come from the bucket.
            assert report["keys_restored"] == len(drill.kept_after_backup), report
            assert report["erasures_reapplied"] == len(drill.erased), report
        started = time.monotonic()
        await check_nothing_lost_nothing_back(drill, archive)
        drill.timed(f"{target}: checks (every path, rebuild-index, redelivery)", started)
    finally:
        await archive.pool.close()


async def check_nothing_lost_nothing_back(drill: Drill, archive: Archive) -> None:
    async with archive.access(archive.a) as access:
        assert {p.wa_id: await conversation(access, p) for p in drill.kept} == drill.before
        for person in drill.erased:
            assert await readable(access, person) == []
    for person in drill.erased:
        assert conversation_lines(archive, person) == ""
        assert await api_messages(archive, person) == []
        assert "GONE" not in export_text(archive, person, drill.out / uuid.uuid4().hex)
        assert "GONE" not in await console_page(archive, person)
    # The console shows a kept person's messages on the restored server (the check above could not fail silently).
    assert "OLD0" in await console_page(archive, drill.kept[0])
    rebuilt = run_cli(archive.cli_env(archive.a), "rebuild-index")
    assert rebuilt.returncode == 0, rebuilt.stderr
    # Meta redelivers the erased persons' webhooks, byte for byte (it retries for days): still dropped.
    await redeliver(archive, drill.erased_bodies)
    async with archive.access(archive.a) as access:
        for person in drill.erased:
            assert await readable(access, person) == []
        assert {p.wa_id: await conversation(access, p) for p in drill.kept} == drill.before
