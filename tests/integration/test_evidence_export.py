"""A person's own export as a signed evidence package (issue #25, "Exports"), on the real Kafka, archiver, S3 and
PostgreSQL with the Graph API stand-in: ``wa-archive export --format all`` writes a BagIt bag whose JSON Lines are
the events as archived, byte for byte, whose media are the person's files, whose RSMF validates against the
vendored schema, and which holds nothing of the group's other participants; ``wa-archive verify-export`` accepts
it and rejects it once a payload file, a manifest or the signature is altered."""

from __future__ import annotations

import asyncio
import base64
import email
import io
import json
import shutil
import uuid
import zipfile
from collections.abc import Callable
from email.policy import default
from pathlib import Path

import asyncpg
import bagit
import jsonschema
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devtools import pipeline
from devtools.broker import create_topic
from devtools.graph_api import FakeGraphApi
from devtools.pipeline import Person
from services.core.events import Event
from services.core.index import binary_keys
from services.evidence.bag import SIGNATURE_FILE, fingerprint, verify_bag
from services.evidence.rsmf import manifest_schema
from tests.helpers.action_stack import Stack
from tests.helpers.groups import T0, Group
from tests.helpers.support import run_cli

pytestmark = pytest.mark.integration

GRAPH_TOKEN = "graph-token-for-evidence-export-tests"
SIGNING_SEED = bytes(range(100, 132))
ALICE_PHOTO = b"\x89PNG\r\n\x1a\n" + b"alice's photo of the parcel " * 30
BOB_PHOTO = b"\x89PNG\r\n\x1a\n" + b"bob's photo, not alice's " * 30
ALICE_PDF = b"%PDF-1.4 alice's invoice " * 20


def group_image(group: Group, sender: str, wamid: str, ts: int, media_id: str, digest: str) -> bytes:
    return pipeline.envelope(
        group.business,
        "messages",
        {
            "contacts": [{"profile": {"name": f"Participant {sender[-4:]}"}, "wa_id": sender}],
            "messages": [
                {
                    "from": sender,
                    "group_id": group.group_id,
                    "id": wamid,
                    "timestamp": str(ts),
                    "type": "image",
                    "image": {"id": media_id, "mime_type": "image/png", "sha256": digest},
                }
            ],
        },
    )


async def archive_with_media(demo_env: dict[str, str], pool: asyncpg.Pool, prefix: str, group: Group) -> list[Event]:
    """The group's lifecycle and texts, a photo each from Alice and Bob in the group, and Alice's own conversation
    with the business (a text, an edit of it, a document): through Kafka and the archiver, media fetched."""
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="evidence")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    alice = Person(group.business.waba_id, group.business.phone_number_id, group.alice)
    async with FakeGraphApi(token=GRAPH_TOKEN) as graph:
        bodies = [
            *group.webhooks(),
            group_image(
                group, group.alice, "wamid.GAP", T0 + 41, "alice-photo", graph.add_media("alice-photo", ALICE_PHOTO)
            ),
            group_image(group, group.bob, "wamid.GBP", T0 + 51, "bob-photo", graph.add_media("bob-photo", BOB_PHOTO)),
            pipeline.text_message(alice, "wamid.A1", "my parcel never came", T0 + 100),
            pipeline.envelope(
                group.business,
                "messages",
                {
                    "contacts": [{"profile": {"name": "Alice"}, "wa_id": group.alice}],
                    "messages": [
                        {
                            "from": group.alice,
                            "id": "wamid.A2",
                            "timestamp": str(T0 + 110),
                            "type": "document",
                            "document": {
                                "id": "alice-pdf",
                                "mime_type": "application/pdf",
                                "sha256": graph.add_media("alice-pdf", ALICE_PDF),
                                "filename": "invoice.pdf",
                            },
                        }
                    ],
                },
            ),
        ]
        events = [*pipeline.events_of(bodies), group.outbound()]
        await pipeline.produce(bootstrap, topic, events)
        settings = pipeline.archiver_settings(demo_env, topic, dlq, prefix, graph=graph.graph_settings())
        async with pipeline.running_archiver(settings):
            await pipeline.wait_indexed(pool, {e.event_id for e in events})
            for _ in range(300):  # the media are fetched with their events; bounded wait for their rows
                archived = await pool.fetchval(
                    "SELECT count(*) FROM archived_media WHERE event_id = ANY($1::bytea[]) AND status = 'archived'",
                    binary_keys(e.event_id for e in events),
                )
                if archived == 3:
                    return events
                await asyncio.sleep(0.1)
    raise AssertionError("the media were not archived")


def every_byte(root: Path) -> bytes:
    """Every file of the bag, the RSMF's zip decoded, as one blob to search."""
    blobs = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        blobs.append(path.read_bytes())
        if path.suffix == ".rsmf":
            (attachment,) = email.message_from_bytes(path.read_bytes(), policy=default).iter_attachments()
            with zipfile.ZipFile(io.BytesIO(attachment.get_content())) as archive:
                blobs.extend(archive.read(name) for name in archive.namelist())
    return b"\n".join(blobs)


async def test_a_persons_signed_export_holds_their_events_and_media_and_nobody_elses(
    demo_env: dict[str, str],
    pg_pool: asyncpg.Pool,
    stack: Stack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    group = Group.fresh()
    events = await archive_with_media(demo_env, pg_pool, stack.settings.s3.prefix, group)
    monkeypatch.setenv("WA_RETENTION_EXPORT_SIGNING__KEY", base64.b64encode(SIGNING_SEED).decode())
    out = tmp_path / "export"
    argv = ["export", "--contact", group.alice, "--reason", "Art. 15 request", "--request-ref", "SAR-25"]
    code, printed, err = await run_cli([*argv, "--format", "all", "--out", str(out)], capsys)
    assert code == 0, err
    expected_key = fingerprint(Ed25519PrivateKey.from_private_bytes(SIGNING_SEED).public_key())
    assert f"signing key fingerprint (sha256): {expected_key}" in printed

    # The JSON Lines are Alice's events as archived, byte for byte, and only hers.
    alice_ids = {
        e.event_id for e in events if e.subject is not None and group.alice in (e.subject.wa_id, e.subject.user_id)
    }
    lines = (out / "data" / "events.jsonl").read_bytes().splitlines()
    assert sorted(lines) == sorted(e.to_json() for e in events if e.event_id in alice_ids)
    assert len(lines) == 6  # joined, two group texts, her group photo, her text, her document

    # Her two media, decrypted, and not Bob's.
    media = {p.name: p.read_bytes() for p in (out / "data" / "media").iterdir()}
    assert sorted(media.values()) == sorted([ALICE_PHOTO, ALICE_PDF])

    # Every hash and the signature, by our check and by PyPI bagit.
    result = verify_bag(out, expected_fingerprint=expected_key)
    assert result.failures == []
    bag = bagit.Bag(str(out))
    bag.validate()
    assert bag.info["Export-Reason"] == "Art. 15 request"
    assert bag.info["External-Identifier"] == "SAR-25"
    assert bag.info["Export-Scope"] == "subject_access"
    assert bag.info["Export-Requested-By"] == "cli-operator-of-test-actions"
    assert {Path(p).name for p in bag.payload_files()} >= {
        "events.jsonl",
        "subject-export-SAR-25.json",
        "subject-export-SAR-25.html",
        "subject-export-SAR-25.rsmf",
        "transcript-SAR-25-001.pdf",
    }

    # The RSMF validates against the vendored schema and carries her media as attachments.
    eml = email.message_from_bytes((out / "data" / "subject-export-SAR-25.rsmf").read_bytes(), policy=default)
    assert eml["X-RSMF-Version"] == "2.0.0"
    (attachment,) = eml.iter_attachments()
    with zipfile.ZipFile(io.BytesIO(attachment.get_content())) as archive:
        manifest = json.loads(archive.read("rsmf_manifest.json"))
        jsonschema.Draft7Validator(manifest_schema(), format_checker=jsonschema.FormatChecker()).validate(manifest)
        attached = {archive.read(name) for name in archive.namelist() if name != "rsmf_manifest.json"}
    assert attached == {ALICE_PHOTO, ALICE_PDF}
    assert eml["X-RSMF-EventCount"] == str(len(manifest["events"]))
    assert {p["id"] for p in manifest["participants"]} == {"business", f"person:{group.alice}"}

    # Nothing of the group's other participants: no number, no message, no photo, anywhere in the bag.
    blob = every_byte(out)
    for absent in (group.bob.encode(), group.chloe.encode(), b"mine is paid already", b"I will pass", BOB_PHOTO[8:40]):
        assert absent not in blob
    assert group.alice.encode() in blob

    # verify-export: accepts the bag, and rejects each alteration with a clear line and a non-zero exit.
    code, printed, err = await run_cli(["verify-export", str(out), "--fingerprint", expected_key], capsys)
    assert code == 0, err
    assert f"signature by key {expected_key}" in printed
    alterations: dict[str, Callable[[Path], object]] = {
        "payload": lambda b: (b / "data" / "events.jsonl").write_bytes(b'{"forged":true}\n'),
        "manifest": lambda b: (b / "manifest-sha512.txt").write_text(
            (b / "manifest-sha512.txt").read_text().replace("events.jsonl", "events.jsonX")
        ),
        "signature": lambda b: (b / SIGNATURE_FILE).write_bytes(bytes(64)),
    }
    expected_words = {
        "payload": "data/events.jsonl: sha256 mismatch",
        "manifest": "manifest-sha512.txt: sha256 mismatch",
        "signature": "does not verify",
    }
    for name, alter in alterations.items():
        copy = tmp_path / f"altered-{name}"
        shutil.copytree(out, copy)
        alter(copy)
        code, printed, err = await run_cli(["verify-export", str(copy)], capsys)
        assert code == 1, (name, printed, err)
        assert expected_words[name] in err, (name, err)
        assert "NOT VERIFIED" in err


async def test_a_bag_needs_an_empty_folder_and_a_signing_key(
    pg_pool: asyncpg.Pool,
    stack: Stack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Both refused before anything is read or decrypted (no audit row)."""
    monkeypatch.delenv("WA_RETENTION_EXPORT_SIGNING__KEY", raising=False)
    reason = f"Art. 15 request {uuid.uuid4().hex}"
    argv = ["export", "--contact", "33600000000", "--reason", reason, "--format", "all", "--out"]
    code, _, err = await run_cli([*argv, str(tmp_path / "new")], capsys)
    assert code == 2
    assert "no export signing key" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    monkeypatch.setenv("WA_RETENTION_EXPORT_SIGNING__KEY", base64.b64encode(SIGNING_SEED).decode())
    code, _, err = await run_cli([*argv, str(tmp_path / "full")], capsys)
    assert code == 2
    assert "is not empty" in err
    assert await pg_pool.fetchval("SELECT count(*) FROM audit_log WHERE reason = $1", reason) == 0
