"""The local broker's principals: one SCRAM-SHA-512 user per service, each allowed what its code does and nothing
else (DESIGN.md §1.8) — the same rights deploy/k8s/base/kafka-users.yaml gives the Strimzi users of production.

- ``wa-ingest`` writes the journal, and nothing else: it cannot read 72 h of plaintext back, nor write a dead
  letter.
- ``wa-archiver`` reads the journal in its consumer group and writes the dead letters; it cannot write the journal.
- ``wa-relay`` reads the journal in one consumer group per destination (``wa-relay-<name>``) and writes each
  destination's parking topic (``wa-relay-<name>-parked``); its replay (``wa-archive relay replay``) reads a parking
  topic in the group ``wa-relay-<name>-replay``. It cannot write the journal nor read another group.
- ``wa-gateway`` (the send gateway) writes the journal, as ingest does, and reads the decisions about held sends
  (``wa.gateway.decisions.v1``) in its group ``wa-gateway-decisions``; it cannot read the journal.
- ``wa-actions`` (the action layer: the console, the retention service and the CLI, which decide held sends)
  writes the decisions topic and nothing else: it reads no journal, and the archive is its database.

All produce idempotently, hence IdempotentWrite on the cluster. ``python -m devtools.kafka_principals``
(run by ``deploy/local/stack.sh up`` once Kafka answers) connects to the plaintext listener, whose anonymous
principal is the local broker's super user, and makes the broker hold exactly these users and ACLs: each user's
password is set again (a new salt; a client already connected keeps its session), a missing ACL is created and
any other ACL of these principals deleted. The names, passwords, topics and group are the services' own settings,
read from the environment (deploy/local/demo.env). It exits non-zero, saying what failed, when the broker still
refuses or does not answer at the deadline.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Final, Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from services.archiver.settings import ArchiverSettings
from services.core.settings import KafkaSettings
from services.gateway.settings import GatewaySettings
from services.relay.replay import replay_group
from services.relay.settings import DestinationSettings, RelaySettings

# Strimzi's vocabulary (kafka-users.yaml), so that the two lists read alike and a test can compare them.
Resource = Literal["topic", "group", "cluster"]
Operation = Literal["Describe", "Read", "Write", "IdempotentWrite"]
# The one name Kafka gives the cluster resource.
CLUSTER: Final = "kafka-cluster"
# Kafka's minimum for SCRAM-SHA-512, and the default of kafka-configs.sh.
SCRAM_ITERATIONS: Final = 4096
# librdkafka's wildcard for a filter's name or host (the stubs say str).
_ANY_NAME: Final[Any] = None
REQUEST_TIMEOUT_S: Final = 15.0

_RESOURCE_TYPES: Final = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP, "cluster": ResourceType.BROKER}
_OPERATIONS: Final = {
    "Describe": AclOperation.DESCRIBE,
    "Read": AclOperation.READ,
    "Write": AclOperation.WRITE,
    "IdempotentWrite": AclOperation.IDEMPOTENT_WRITE,
}


@dataclass(frozen=True, slots=True, order=True)
class Grant:
    """One ALLOW ACL, from any host, on a literal resource name (``kafka-cluster`` for the cluster)."""

    resource: Resource
    name: str
    operation: Operation

    def binding(self, user: str) -> AclBinding:
        return AclBinding(
            _RESOURCE_TYPES[self.resource],
            self.name,
            ResourcePatternType.LITERAL,
            f"User:{user}",
            "*",
            _OPERATIONS[self.operation],
            AclPermissionType.ALLOW,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    user: str
    password: str
    grants: frozenset[Grant]

    def bindings(self) -> list[AclBinding]:
        return [grant.binding(self.user) for grant in sorted(self.grants)]


def ingest_grants(kafka: KafkaSettings) -> frozenset[Grant]:
    """ingest produces the journal (acks=all, idempotent) and nothing else."""
    return frozenset(
        {
            Grant("topic", kafka.events_topic, "Describe"),
            Grant("topic", kafka.events_topic, "Write"),
            Grant("cluster", CLUSTER, "IdempotentWrite"),
        }
    )


def archiver_grants(kafka: KafkaSettings, group_id: str) -> frozenset[Grant]:
    """The archiver consumes the journal in its group (join, fetch, commit) and produces the dead letters."""
    return frozenset(
        {
            Grant("topic", kafka.events_topic, "Describe"),
            Grant("topic", kafka.events_topic, "Read"),
            Grant("group", group_id, "Describe"),
            Grant("group", group_id, "Read"),
            Grant("topic", kafka.dlq_topic, "Describe"),
            Grant("topic", kafka.dlq_topic, "Write"),
            Grant("cluster", CLUSTER, "IdempotentWrite"),
        }
    )


def gateway_grants(kafka: KafkaSettings, decisions_topic: str, decisions_group: str) -> frozenset[Grant]:
    """The gateway journals as ingest does, and consumes the decisions about held sends in its group."""
    return ingest_grants(kafka) | {
        Grant("topic", decisions_topic, "Describe"),
        Grant("topic", decisions_topic, "Read"),
        Grant("group", decisions_group, "Describe"),
        Grant("group", decisions_group, "Read"),
    }


def actions_grants(decisions_topic: str) -> frozenset[Grant]:
    """The action layer produces the decisions about held sends (acks=all, idempotent), and nothing else."""
    return frozenset(
        {
            Grant("topic", decisions_topic, "Describe"),
            Grant("topic", decisions_topic, "Write"),
            Grant("cluster", CLUSTER, "IdempotentWrite"),
        }
    )


def relay_grants(kafka: KafkaSettings, groups: Iterable[str], parking_topics: Iterable[str]) -> frozenset[Grant]:
    """The relay consumes the journal in a group per destination and produces each destination's parking topic; its
    replay reads the parking topics (in groups of their own, named in ``groups`` too)."""
    grants = {
        Grant("topic", kafka.events_topic, "Describe"),
        Grant("topic", kafka.events_topic, "Read"),
        Grant("cluster", CLUSTER, "IdempotentWrite"),
    }
    for group in groups:
        grants |= {Grant("group", group, "Describe"), Grant("group", group, "Read")}
    for topic in parking_topics:
        grants |= {Grant("topic", topic, "Describe"), Grant("topic", topic, "Write"), Grant("topic", topic, "Read")}
    return frozenset(grants)


def relay_principal(environ: Mapping[str, str]) -> Principal:
    """The relay's principal from its settings in ``environ``: its destinations name its groups and parking topics."""
    kafka = kafka_settings(environ, "WA_RELAY_KAFKA__")
    destinations = [
        DestinationSettings.model_validate(d) for d in json.loads(environ.get("WA_RELAY_DESTINATIONS", "[]"))
    ]
    prefix = environ.get("WA_RELAY_GROUP_PREFIX", RelaySettings.model_fields["group_prefix"].default)
    groups = [group for d in destinations for group in (prefix + d.name, replay_group(prefix, d.name))]
    grants = relay_grants(kafka, groups, [d.topic_for_parking() for d in destinations])
    return principal(kafka, grants, "WA_RELAY_KAFKA__")


def kafka_settings(environ: Mapping[str, str], prefix: str) -> KafkaSettings:
    """A service's Kafka block from its variables in ``environ`` (``WA_INGEST_KAFKA__SASL_USERNAME`` …), as the
    service's own settings read them."""
    fields = {name.removeprefix(prefix).lower(): value for name, value in environ.items() if name.startswith(prefix)}
    return KafkaSettings.model_validate(fields)


def principal(kafka: KafkaSettings, grants: frozenset[Grant], prefix: str) -> Principal:
    """The principal a service's Kafka settings name, or a ValueError naming the variables to set."""
    if not (kafka.sasl_username and kafka.sasl_password):
        raise ValueError(f"{prefix}SASL_USERNAME and {prefix}SASL_PASSWORD must name the service's principal")
    return Principal(user=kafka.sasl_username, password=kafka.sasl_password.get_secret_value(), grants=grants)


def local_principals(environ: Mapping[str, str]) -> list[Principal]:
    """The principals of ingest, the archiver, the relay, the send gateway and the action layer, from their settings
    in ``environ`` (deploy/local/demo.env). The action layer's is read from the retention service's settings
    (``WA_RETENTION_KAFKA__``); the console and the CLI use the same principal."""
    ingest = kafka_settings(environ, "WA_INGEST_KAFKA__")
    archiver = kafka_settings(environ, "WA_ARCHIVER_KAFKA__")
    gateway = kafka_settings(environ, "WA_GATEWAY_KAFKA__")
    actions = kafka_settings(environ, "WA_RETENTION_KAFKA__")
    group_id = environ.get("WA_ARCHIVER_GROUP_ID", ArchiverSettings.model_fields["group_id"].default)
    decisions = environ.get("WA_GATEWAY_DECISIONS_TOPIC", GatewaySettings.model_fields["decisions_topic"].default)
    decisions_group = environ.get("WA_GATEWAY_DECISIONS_GROUP", GatewaySettings.model_fields["decisions_group"].default)
    return [
        principal(ingest, ingest_grants(ingest), "WA_INGEST_KAFKA__"),
        principal(archiver, archiver_grants(archiver, group_id), "WA_ARCHIVER_KAFKA__"),
        relay_principal(environ),
        # The gateway journals sends as ingest journals webhooks, and reads the decisions about held sends.
        principal(gateway, gateway_grants(gateway, decisions, decisions_group), "WA_GATEWAY_KAFKA__"),
        principal(actions, actions_grants(decisions), "WA_RETENTION_KAFKA__"),
    ]


def acl_key(binding: AclBinding) -> tuple[object, ...]:
    """What makes an ACL the one it is (AclBinding has no value equality of its own)."""
    return (
        binding.restype,
        binding.name,
        binding.resource_pattern_type,
        binding.principal,
        binding.host,
        binding.operation,
        binding.permission_type,
    )


def _exactly(binding: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(
        binding.restype,
        binding.name,
        binding.resource_pattern_type,
        binding.principal,
        binding.host,
        binding.operation,
        binding.permission_type,
    )


def principal_acls(admin: AdminClient, user: str) -> list[AclBinding]:
    """Every ACL of ``User:user`` on the broker (any resource, pattern, host, operation or permission)."""
    acl_filter = AclBindingFilter(
        ResourceType.ANY,
        _ANY_NAME,
        ResourcePatternType.ANY,
        f"User:{user}",
        _ANY_NAME,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    found: list[AclBinding] = admin.describe_acls(acl_filter, request_timeout=REQUEST_TIMEOUT_S).result()
    return found


@dataclass(frozen=True, slots=True)
class Provisioned:
    created: int
    deleted: int


def provision(admin: AdminClient, principals: Sequence[Principal]) -> Provisioned:
    """Make the broker hold exactly ``principals``: their SCRAM-SHA-512 credentials and their ACLs, no other ACL of
    theirs. Raises KafkaException when the broker refuses or times out (nothing is rolled back: run it again)."""
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(
            p.user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS), p.password.encode()
        )
        for p in principals
    ]
    _wait(admin.alter_user_scram_credentials(upserts, request_timeout=REQUEST_TIMEOUT_S).values())
    created = deleted = 0
    for p in principals:
        wanted = {acl_key(b): b for b in p.bindings()}
        present = {acl_key(b): b for b in principal_acls(admin, p.user)}
        extra = [_exactly(binding) for key, binding in present.items() if key not in wanted]
        missing = [binding for key, binding in wanted.items() if key not in present]
        if extra:
            _wait(admin.delete_acls(extra, request_timeout=REQUEST_TIMEOUT_S).values())
        if missing:
            _wait(admin.create_acls(missing, request_timeout=REQUEST_TIMEOUT_S).values())
        created, deleted = created + len(missing), deleted + len(extra)
    return Provisioned(created=created, deleted=deleted)


def _wait(futures: Iterable[Future[Any]]) -> None:
    for future in futures:
        future.result()


def main() -> int:
    """Provision the local principals over the plaintext listener (``WA_KAFKA_PORT``), retrying until
    ``WA_READY_TIMEOUT`` (90 s): a broker just started may not have elected its controller yet. Exit 1 on
    failure."""
    environ = dict(os.environ)
    try:
        principals = local_principals(environ)
        port = environ["WA_KAFKA_PORT"]
    except (ValueError, KeyError) as exc:
        print(f"[kafka-principals] {exc}: source deploy/local/demo.env", file=sys.stderr)
        return 1
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "client.id": "wa-archive-provision"})
    deadline = time.monotonic() + float(environ.get("WA_READY_TIMEOUT", "90"))
    while True:
        try:
            done = provision(admin, principals)
            break
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                print(f"[kafka-principals] the broker on 127.0.0.1:{port} refused: {exc}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    users = ", ".join(p.user for p in principals)
    print(f"[kafka-principals] {users}: SCRAM-SHA-512 set, {done.created} ACLs created, {done.deleted} removed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
