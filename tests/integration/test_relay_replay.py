"""``wa-archive relay parked|replay`` against the real Kafka and a local receiver that verifies Meta's signature
over the bytes it gets (devtools/inbox.py), in one run over one parking topic of five records:

- the listing shows offsets, reasons and journal positions, never a body;
- a dry run delivers nothing and commits nothing;
- a receiver still refusing stops the run at the first record (exit 1), nothing delivered, nothing committed;
- once it accepts, ``--to`` delivers a prefix and the next run the rest (exit 0): every record exactly once, in
  order, Meta's signature verified, each naming its original journal position;
- a third run delivers nothing; an unknown destination is exit 2.
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devtools.broker import committed_offsets
from devtools.inbox import InboxReceiver
from devtools.serving import serve_asgi
from services.cli import main
from services.core.journal import webhook_record
from services.core.kafka import AckedProducer, OutgoingRecord
from services.core.settings import KafkaSettings
from services.ingest.signature import sign
from services.relay.delivery import RECORD_POSITION
from services.relay.relay import PARK_ATTEMPTS_HEADER, PARK_REASON_HEADER, PARK_SOURCE_HEADER
from services.tools.loadgen import webhook_body

pytestmark = pytest.mark.integration

META_SECRET = b"relay-replay-it-meta-secret"
PARKED = 5


def parked_record(topic: str, sequence: int) -> tuple[OutgoingRecord, bytes]:
    raw = webhook_body("WABA1", "100000000000009", {"messages": [{"id": f"wamid.replay.{sequence}", "type": "text"}]})
    journal = webhook_record(
        "wa.events.v1", "100000000000009", raw, signature=sign(raw, META_SECRET), received_at="2026-12-07T00:00Z"
    )
    headers = (
        *journal.headers,
        (PARK_REASON_HEADER, b"rejected: HTTP 401"),
        (PARK_SOURCE_HEADER, f"wa.events.v1/0/{100 + sequence}".encode()),
        (PARK_ATTEMPTS_HEADER, b"1"),
    )
    return OutgoingRecord(topic, b"100000000000009", raw, headers), raw


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """One ``wa-archive`` run in this process: its exit status, stdout and stderr."""
    with pytest.raises(SystemExit) as ended:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(ended.value.code or 0), out, err


async def test_parked_records_are_listed_then_replayed_once_in_order_with_metas_signature(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"it-replay-{uuid.uuid4().hex[:8]}"
    topic = f"wa-relay-{name}-parked"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AckedProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    await producer.start()
    bodies: list[bytes] = []
    try:
        await producer.wait_connected(20)
        for sequence in range(PARKED):
            record, raw = parked_record(topic, sequence)
            await producer.produce((record,), deadline_s=10)
            bodies.append(raw)
    finally:
        await producer.stop()

    inbox = InboxReceiver([META_SECRET], keep=True)
    async with serve_asgi(inbox, lifespan="off") as url:
        monkeypatch.setenv("WA_RELAY_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap)
        monkeypatch.setenv("WA_RELAY_DESTINATIONS", orjson.dumps([{"name": name, "url": url}]).decode())

        async def run(*argv: str) -> tuple[int, str, str]:
            return await asyncio.to_thread(cli, capsys, *argv)

        status, out, err = await run("relay", "parked", name, "--format", "json")
        assert status == 0, err
        rows = orjson.loads(out)
        assert [(r["offset"], r["reason"], r["source"], r["replayed"]) for r in rows] == [
            (n, "rejected: HTTP 401", f"wa.events.v1/0/{100 + n}", False) for n in range(PARKED)
        ]
        assert "wamid" not in out  # offsets, reasons and positions only: never a body
        status, out, _ = await run("relay", "parked", name)
        assert (status, "wamid" in out) == (0, False)
        assert f"5 parked records in {topic}, 5 not replayed" in out

        status, out, _ = await run("relay", "replay", name, "--dry-run")
        assert (status, inbox.verified) == (0, 0)
        assert "would deliver 5 parked records (offsets 0-4)" in out

        inbox.fail_with(401)
        status, _, err = await run("relay", "replay", name)
        assert status == 1
        assert "stopped at offset 0 (partition 0): rejected: HTTP 401" in err
        assert await committed_offsets(kafka_bootstrap, f"wa-relay-{name}-replay", topic, 1) == {0: 0}

        inbox.fail_with(None)
        status, out, _ = await run("relay", "replay", name, "--to", "1")
        assert status == 0
        assert "delivered 2 parked records (offsets 0-1)" in out
        status, out, _ = await run("relay", "replay", name)
        assert status == 0
        assert "delivered 3 parked records (offsets 2-4); 2 replayed before" in out
        status, out, _ = await run("relay", "replay", name)
        assert (status, len(inbox.received)) == (0, PARKED)
        assert "delivered 0 parked records; 5 replayed before" in out

        assert [d.body for d in inbox.received] == bodies  # the bytes Meta signed, each once, in order
        assert inbox.refused == 0
        assert [d.headers[RECORD_POSITION.lower()] for d in inbox.received] == [
            f"wa.events.v1/0/{100 + n}" for n in range(PARKED)
        ]
        assert await committed_offsets(kafka_bootstrap, f"wa-relay-{name}-replay", topic, 1) == {0: PARKED}
        status, out, _ = await run("relay", "parked", name, "--format", "json")
        assert all(r["replayed"] for r in orjson.loads(out))
        status, _, err = await run("relay", "replay", "no-such-destination")
        assert status == 2
        assert "no destination 'no-such-destination'" in err
