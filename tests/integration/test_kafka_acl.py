"""The local broker's principals, proven on the real broker (DESIGN.md §1.8, devtools/kafka_principals.py):
ingest writes the journal only; the archiver reads the journal in its group and writes the dead letters.

- The broker holds exactly the grants of kafka_principals for the demo's principals (stack.sh provisioned them),
  and says so itself: the operations it authorizes each of them on the demo's topics and group (KIP-430), asked
  over the SASL listener with the services' own settings from deploy/local/demo.env.
- The demo's principals are refused, on the demo's topics, what they must not do (nothing is written): ingest
  reading the journal (alone or in the archiver's group) or writing a dead letter; the archiver writing the
  journal or consuming in another group.
- What they must do is done by the services' own code under exactly those grants, given to throwaway principals
  on throwaway topics and a throwaway group: ingest journals signed webhooks, the archiver archives them, dead-
  letters a poison record and commits. The demo's journal and group are left to `make run`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError
from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramMechanism,
    UserScramCredentialDeletion,
)
from pydantic import SecretStr

from devtools import pipeline
from devtools.broker import committed_offsets, create_topic, end_offsets, topic_from_start
from devtools.inbox import InboxReceiver
from devtools.kafka_principals import (
    Principal,
    acl_key,
    archiver_grants,
    ingest_grants,
    kafka_settings,
    local_principals,
    principal_acls,
    provision,
    relay_grants,
)
from devtools.samples import load_demo_env
from devtools.serving import serve_asgi
from services.core.journal import webhook_record
from services.core.kafka import AckedProducer, OutgoingRecord, ProduceUnavailable, librdkafka_config
from services.core.settings import KafkaSettings
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from services.ingest.signature import sign
from services.relay.replay import replay_group, replay_parked
from services.relay.service import destination_of, http_client, run_relay
from services.relay.settings import DestinationSettings, RelaySettings
from services.tools.replay import post_signed

pytestmark = pytest.mark.integration

# The file itself, not the tests' environment (conftest switches the services under test to the super user).
DEMO = load_demo_env()
EVENTS, DLQ, GROUP = DEMO["WA_EVENTS_TOPIC"], DEMO["WA_DLQ_TOPIC"], "wa-archiver"
SECRET = b"kafka-acl-it-secret"
# A refusal comes back within a round trip or two; this bounds a broker that does not answer.
REFUSED_WITHIN_S = 20.0


def demo_kafka(service: str, **changes: str) -> KafkaSettings:
    """The service's Kafka settings of deploy/local/demo.env: its principal, on the SASL listener."""
    return kafka_settings(DEMO, f"WA_{service.upper()}_KAFKA__").model_copy(update=changes)


def super_admin() -> AdminClient:
    return AdminClient({"bootstrap.servers": f"127.0.0.1:{DEMO['WA_KAFKA_PORT']}"})


def test_the_broker_holds_exactly_the_demo_principals_and_their_grants() -> None:
    admin = super_admin()
    principals = local_principals(DEMO)
    assert [p.user for p in principals] == ["wa-ingest", "wa-archiver", "wa-relay", "wa-gateway", "wa-actions"]
    credentials = admin.describe_user_scram_credentials([p.user for p in principals], request_timeout=10)
    assert isinstance(credentials, dict)
    for user, future in credentials.items():
        (info,) = future.result().scram_credential_infos
        assert info.mechanism == ScramMechanism.SCRAM_SHA_512, user
    for p in principals:
        assert {acl_key(b) for b in principal_acls(admin, p.user)} == {acl_key(b) for b in p.bindings()}, p.user


def authorized(admin: AdminClient, describe: Callable[[AdminClient], object]) -> set[str] | str:
    """The operations the broker authorizes the caller on one resource, or the name of its refusal."""
    try:
        operations = describe(admin)
    except KafkaException as exc:
        return str(exc.args[0].name())
    assert isinstance(operations, list)
    return {operation.name for operation in operations}


def topic_operations(topic: str) -> Callable[[AdminClient], object]:
    def describe(admin: AdminClient) -> object:
        (future,) = admin.describe_topics(
            TopicCollection([topic]), include_authorized_operations=True, request_timeout=10
        ).values()
        return future.result().authorized_operations

    return describe


def group_operations(group: str) -> Callable[[AdminClient], object]:
    def describe(admin: AdminClient) -> object:
        (future,) = admin.describe_consumer_groups(
            [group], include_authorized_operations=True, request_timeout=10
        ).values()
        return future.result().authorized_operations

    return describe


@pytest.mark.parametrize(
    ("service", "journal", "dead_letters", "group"),
    [
        pytest.param(
            "ingest",
            {"DESCRIBE", "WRITE"},
            "TOPIC_AUTHORIZATION_FAILED",
            "GROUP_AUTHORIZATION_FAILED",
            id="ingest writes the journal only",
        ),
        pytest.param(
            "archiver",
            {"DESCRIBE", "READ"},
            {"DESCRIBE", "WRITE"},
            {"DESCRIBE", "READ"},
            id="the archiver reads the journal in its group and writes dead letters",
        ),
    ],
)
def test_the_broker_authorizes_each_principal_its_grants_only(
    service: str, journal: set[str], dead_letters: set[str] | str, group: set[str] | str
) -> None:
    config: dict[str, str | int | float | bool] = {**librdkafka_config(demo_kafka(service))}
    admin = AdminClient(config)
    assert authorized(admin, topic_operations(EVENTS)) == journal
    assert authorized(admin, topic_operations(DLQ)) == dead_letters
    assert authorized(admin, group_operations(GROUP)) == group


async def first_read(consumer: AIOKafkaConsumer, assign: list[TopicPartition] | None = None) -> None:
    """Start ``consumer`` and fetch until a record comes or the broker refuses (bounded)."""
    try:
        await consumer.start()
        if assign is not None:
            consumer.assign(assign)
            await consumer.seek_to_beginning(*assign)
        async with asyncio.timeout(REFUSED_WITHIN_S):
            while not await consumer.getmany(timeout_ms=500):
                pass
    finally:
        await consumer.stop()


async def test_ingest_is_refused_when_it_reads_the_journal() -> None:
    """ingest's principal cannot read the journal back: not by fetching it, not in the archiver's group."""
    options = demo_kafka("ingest").client_options()
    partitions = [TopicPartition(EVENTS, p) for p in range(int(DEMO["WA_TOPIC_PARTITIONS"]))]
    with pytest.raises(TopicAuthorizationFailedError):
        await first_read(AIOKafkaConsumer(**options, enable_auto_commit=False), assign=partitions)
    with pytest.raises(GroupAuthorizationFailedError):
        await first_read(AIOKafkaConsumer(EVENTS, **options, group_id=GROUP, enable_auto_commit=False))


async def test_the_archiver_is_refused_another_group() -> None:
    options = demo_kafka("archiver").client_options()
    with pytest.raises(GroupAuthorizationFailedError):
        await first_read(AIOKafkaConsumer(EVENTS, **options, group_id=f"not-{GROUP}", enable_auto_commit=False))


@pytest.mark.parametrize(
    ("service", "topic"),
    [
        pytest.param("ingest", DLQ, id="ingest writes no dead letter"),
        pytest.param("archiver", EVENTS, id="the archiver does not write the journal"),
    ],
)
async def test_a_principal_is_refused_writing_a_topic_not_its_own(service: str, topic: str) -> None:
    producer = AckedProducer(demo_kafka(service))
    await producer.start()
    try:
        await producer.wait_connected(REFUSED_WITHIN_S)
        with pytest.raises(ProduceUnavailable, match="TOPIC_AUTHORIZATION_FAILED"):
            await producer.produce([OutgoingRecord(topic, b"k", b"refused")], deadline_s=REFUSED_WITHIN_S)
    finally:
        await producer.stop()


# ------------------------------------------------------------------ what they must do, under exactly these grants


@dataclass(frozen=True)
class Throwaway:
    topic: str
    dlq: str
    group: str
    ingest: KafkaSettings
    archiver: KafkaSettings
    relay: KafkaSettings
    destination: str  # the relay's destination: group wa-relay-<destination>, parking topic ``parking``
    parking: str


def sasl_settings(p: Principal, topic: str, dlq: str) -> KafkaSettings:
    return demo_kafka("ingest").model_copy(
        update={
            "sasl_username": p.user,
            "sasl_password": SecretStr(p.password),
            "events_topic": topic,
            "dlq_topic": dlq,
        }
    )


@pytest.fixture
async def throwaway(kafka_bootstrap: str) -> AsyncIterator[Throwaway]:
    """Two principals with the grants of ingest and the archiver on topics and a group of their own; removed after."""
    topic = await create_topic(kafka_bootstrap, partitions=2, prefix="acl")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="acl-dlq")
    suffix = uuid.uuid4().hex[:8]
    group = f"test-acl-{suffix}"
    names = KafkaSettings(events_topic=topic, dlq_topic=dlq)
    ingest = Principal(user=f"test-ingest-{suffix}", password=secrets.token_urlsafe(24), grants=ingest_grants(names))
    archiver = Principal(
        user=f"test-archiver-{suffix}", password=secrets.token_urlsafe(24), grants=archiver_grants(names, group)
    )
    parking = await create_topic(kafka_bootstrap, partitions=1, prefix="acl-parked")
    destination = f"acl-{suffix}"
    relay = Principal(
        user=f"test-relay-{suffix}",
        password=secrets.token_urlsafe(24),
        grants=relay_grants(names, [f"wa-relay-{destination}", replay_group("wa-relay-", destination)], [parking]),
    )
    admin = super_admin()
    provision(admin, [ingest, archiver, relay])
    try:
        yield Throwaway(
            topic,
            dlq,
            group,
            sasl_settings(ingest, topic, dlq),
            sasl_settings(archiver, topic, dlq),
            sasl_settings(relay, topic, dlq),
            destination,
            parking,
        )
    finally:
        users = [ingest.user, archiver.user, relay.user]
        for future in admin.delete_acls(
            [
                AclBindingFilter(
                    ResourceType.ANY,
                    None,  # type: ignore[arg-type]  # librdkafka's wildcard
                    ResourcePatternType.ANY,
                    f"User:{user}",
                    None,  # type: ignore[arg-type]
                    AclOperation.ANY,
                    AclPermissionType.ANY,
                )
                for user in users
            ],
            request_timeout=10,
        ).values():
            future.result()
        deletions = [UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512) for user in users]
        for future in admin.alter_user_scram_credentials(deletions, request_timeout=10).values():  # type: ignore[arg-type]
            future.result()
        remover = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await remover.start()
        try:
            await remover.delete_topics([topic, dlq, parking])
        finally:
            await remover.close()


async def test_the_services_work_under_exactly_their_grants(
    throwaway: Throwaway, kafka_bootstrap: str, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    """ingest (its app, in process) journals signed webhooks as its principal; the archiver service consumes them
    in its group as its own, archives the good ones, dead-letters the poison one and commits all."""
    person, now = pipeline.Person.fresh(), int(time.time())
    good = [pipeline.text_message(person, f"wamid.acl{n}", "hello", now) for n in range(3)]
    unstorable = pipeline.Person(person.waba_id, person.phone_number_id + "\x00", person.wa_id)
    poison = pipeline.text_message(unstorable, "wamid.acl-poison", "hi", now)
    ingest = IngestApp(
        IngestSettings(app_secrets=[SecretStr(SECRET.decode())], verify_token=SecretStr("v"), kafka=throwaway.ingest)
    )
    async with serve_asgi(ingest) as url, httpx.AsyncClient(timeout=10) as client:
        await ingest.producer.wait_connected(REFUSED_WITHIN_S)
        for body in [*good, poison]:
            assert await post_signed(client, f"{url}/webhooks/whatsapp", body, SECRET, attempts=1) == 200
    settings = pipeline.archiver_settings(demo_env, throwaway.topic, throwaway.dlq, f"test/{uuid.uuid4().hex[:8]}")
    settings = settings.model_copy(update={"kafka": throwaway.archiver, "group_id": throwaway.group})
    async with pipeline.running_archiver(settings):
        await pipeline.wait_indexed(pg_pool, {e.event_id for e in pipeline.events_of(good)})
        reasons: list[str] = []
        async with topic_from_start(kafka_bootstrap, throwaway.dlq, 1) as dead:
            for _ in range(100):  # bounded: 20 s
                for records in (await dead.getmany(timeout_ms=200)).values():
                    reasons.extend(dict(r.headers)["wa-dlq-reason"].decode() for r in records)
                if reasons:
                    break
    assert reasons == ["unstorable phone_number_id: contains NUL"]
    # Stopped: everything consumed is committed in the throwaway group, dead letter included.
    ends = await end_offsets(kafka_bootstrap, throwaway.topic, 2)
    assert await committed_offsets(kafka_bootstrap, throwaway.group, throwaway.topic, 2) == ends
    assert sum(ends.values()) == len(good) + 1


async def test_the_relay_works_under_exactly_its_grants(throwaway: Throwaway, kafka_bootstrap: str) -> None:
    """The relay reads the journal in its destination's group, parks what the receiver refuses on the parking topic
    and commits, as its own principal with exactly relay_grants; once the receiver accepts, ``wa-archive relay
    replay`` delivers the parked records under the same grants (the parking topic read in the replay group)."""
    producer = AckedProducer(throwaway.ingest)
    await producer.start()
    try:
        await producer.wait_connected(REFUSED_WITHIN_S)
        for n in range(3):
            raw = (
                b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"n":%d}}]}]}'
                % n
            )
            record = webhook_record(
                throwaway.topic, "111", raw, signature=sign(raw, SECRET), received_at="2026-12-06T00:00:00.000Z"
            )
            await producer.produce((record,), deadline_s=REFUSED_WITHIN_S)
    finally:
        await producer.stop()
    inbox = InboxReceiver([SECRET])
    inbox.fail_with(400)
    stop = asyncio.Event()
    async with serve_asgi(inbox, lifespan="off") as url:
        settings = RelaySettings(
            port=0,
            kafka=throwaway.relay,
            destinations=[DestinationSettings(name=throwaway.destination, url=url, parking_topic=throwaway.parking)],
            commit_interval_s=0.1,
        )
        relay = asyncio.create_task(run_relay(settings, stop))
        try:
            async with topic_from_start(kafka_bootstrap, throwaway.parking, 1) as parked:
                reasons: list[bytes] = []
                async with asyncio.timeout(REFUSED_WITHIN_S):
                    while len(reasons) < 3:
                        for records in (await parked.getmany(timeout_ms=200)).values():
                            reasons.extend(dict(r.headers)["wa-relay-reason"] for r in records)
            assert reasons == [b"rejected: HTTP 400"] * 3
        finally:
            stop.set()
            await asyncio.wait_for(relay, 30)
        inbox.fail_with(None)
        group = replay_group("wa-relay-", throwaway.destination)
        client = http_client(settings.destinations[0])
        try:
            report = await replay_parked(throwaway.relay, destination_of(settings.destinations[0]), client, group)
        finally:
            await client.aclose()
        assert (report.delivered, report.stopped, inbox.verified) == ([0, 1, 2], None, 3)
    ends = await end_offsets(kafka_bootstrap, throwaway.topic, 2)
    assert await committed_offsets(kafka_bootstrap, f"wa-relay-{throwaway.destination}", throwaway.topic, 2) == ends
