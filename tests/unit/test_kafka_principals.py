"""The local broker's principals (devtools/kafka_principals.py): the rights the manifests give in production,
named by the services' own settings of deploy/local/demo.env."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import AclOperation, AclPermissionType, ResourcePatternType, ResourceType
from pydantic import SecretStr

from devtools.kafka_principals import (
    CLUSTER,
    Grant,
    actions_grants,
    archiver_grants,
    gateway_grants,
    ingest_grants,
    kafka_settings,
    local_principals,
    principal,
    relay_grants,
)
from devtools.samples import REPO_ROOT, load_demo_env
from services.archiver.settings import ArchiverSettings
from services.core.settings import KafkaSettings

DEMO = load_demo_env()


def manifest_grants() -> dict[str, frozenset[Grant]]:
    """The ACLs of each KafkaUser of deploy/k8s/base/kafka-users.yaml, as grants."""
    users: dict[str, frozenset[Grant]] = {}
    for user in yaml.safe_load_all((REPO_ROOT / "deploy/k8s/base/kafka-users.yaml").read_text()):
        acls: list[dict[str, Any]] = user["spec"]["authorization"]["acls"]
        grants = set()
        for acl in acls:
            resource = acl["resource"]
            assert resource.get("patternType", "literal") == "literal", "the services' names are literal"
            assert acl.get("type", "allow") == "allow"
            assert acl.get("host", "*") == "*"
            name = CLUSTER if resource["type"] == "cluster" else resource["name"]
            grants |= {Grant(resource["type"], name, operation) for operation in acl["operations"]}
        users[user["metadata"]["name"]] = frozenset(grants)
    return users


def k8s_relay_destinations() -> list[str]:
    """The destinations' names of deploy/k8s/base/config.env (an overlay replaces them, and the grants with them)."""
    for line in (REPO_ROOT / "deploy/k8s/base/config.env").read_text().splitlines():
        if line.startswith("WA_RELAY_DESTINATIONS="):
            return [d["name"] for d in json.loads(line.partition("=")[2])]
    raise AssertionError("deploy/k8s/base/config.env sets no WA_RELAY_DESTINATIONS")


def test_the_local_grants_are_the_production_ones() -> None:
    """Exactly what the Strimzi users of deploy/k8s are granted, for the services' default names."""
    kafka = KafkaSettings()
    group = ArchiverSettings.model_fields["group_id"].default
    names = k8s_relay_destinations()
    groups = [group for n in names for group in (f"wa-relay-{n}", f"wa-relay-{n}-replay")]
    relay = relay_grants(kafka, groups, [f"wa-relay-{n}-parked" for n in names])
    assert manifest_grants() == {
        "wa-ingest": ingest_grants(kafka),
        "wa-archiver": archiver_grants(kafka, group),
        "wa-relay": relay,
        "wa-gateway": gateway_grants(kafka, "wa.gateway.decisions.v1", "wa-gateway-decisions"),
        "wa-actions": actions_grants("wa.gateway.decisions.v1"),
    }


def test_ingest_may_not_read_nor_write_dead_letters() -> None:
    kafka = KafkaSettings()
    grants = ingest_grants(kafka)
    assert {g.operation for g in grants if g.resource == "topic"} == {"Describe", "Write"}
    assert {g.name for g in grants if g.resource == "topic"} == {kafka.events_topic}
    assert not [g for g in grants if g.resource == "group"]


def test_the_relay_reads_the_journal_in_its_groups_and_writes_and_replays_only_its_parking_topics() -> None:
    (_ingest, _archiver, relay, _gateway, _actions) = local_principals(DEMO)
    assert relay.user == DEMO["WA_RELAY_KAFKA__SASL_USERNAME"] == "wa-relay"
    assert {(g.name, g.operation) for g in relay.grants if g.resource == "group"} == {
        ("wa-relay-inbox", "Describe"),
        ("wa-relay-inbox", "Read"),
        ("wa-relay-inbox-replay", "Describe"),  # wa-archive relay replay's progress
        ("wa-relay-inbox-replay", "Read"),
    }
    written = {g.name for g in relay.grants if g.resource == "topic" and g.operation == "Write"}
    assert written == {"wa-relay-inbox-parked"}
    read = {g.name for g in relay.grants if g.resource == "topic" and g.operation == "Read"}
    assert read == {DEMO["WA_EVENTS_TOPIC"], "wa-relay-inbox-parked"}
    assert Grant("topic", DEMO["WA_EVENTS_TOPIC"], "Read") in relay.grants


def test_the_demo_principals_are_the_services_own_settings() -> None:
    ingest, archiver, _relay, gateway, actions = local_principals(DEMO)
    assert (ingest.user, ingest.password) == (
        DEMO["WA_INGEST_KAFKA__SASL_USERNAME"],
        DEMO["WA_INGEST_KAFKA__SASL_PASSWORD"],
    )
    assert archiver.user == DEMO["WA_ARCHIVER_KAFKA__SASL_USERNAME"] == "wa-archiver"
    # The names provision.py creates the topics with are the ones the grants name.
    assert Grant("topic", DEMO["WA_EVENTS_TOPIC"], "Write") in ingest.grants
    assert Grant("topic", DEMO["WA_DLQ_TOPIC"], "Write") in archiver.grants
    assert Grant("group", "wa-archiver", "Read") in archiver.grants
    assert gateway.user == DEMO["WA_GATEWAY_KAFKA__SASL_USERNAME"] == "wa-gateway"
    assert ingest.grants < gateway.grants
    decisions = {g for g in gateway.grants - ingest.grants}
    assert decisions == {
        Grant("topic", "wa.gateway.decisions.v1", "Describe"),
        Grant("topic", "wa.gateway.decisions.v1", "Read"),
        Grant("group", "wa-gateway-decisions", "Describe"),
        Grant("group", "wa-gateway-decisions", "Read"),
    }
    # The action layer writes the decisions and nothing else: it reads no topic, joins no group.
    assert actions.user == DEMO["WA_RETENTION_KAFKA__SASL_USERNAME"] == DEMO["WA_CONSOLE_KAFKA__SASL_USERNAME"]
    assert actions.user == "wa-actions"
    assert {(g.resource, g.name, g.operation) for g in actions.grants if g.operation != "IdempotentWrite"} == {
        ("topic", "wa.gateway.decisions.v1", "Describe"),
        ("topic", "wa.gateway.decisions.v1", "Write"),
    }


@pytest.mark.parametrize("service", ["INGEST", "ARCHIVER", "RELAY", "GATEWAY", "RETENTION", "CONSOLE"])
def test_the_demo_services_connect_to_the_sasl_listener(service: str) -> None:
    kafka = kafka_settings(DEMO, f"WA_{service}_KAFKA__")
    assert kafka.bootstrap_servers == f"127.0.0.1:{DEMO['WA_KAFKA_SASL_PORT']}"
    assert (kafka.security_protocol, kafka.sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")


def test_a_group_of_its_own_is_granted_to_the_archiver() -> None:
    (_ingest, archiver, _relay, _gateway, _actions) = local_principals({**DEMO, "WA_ARCHIVER_GROUP_ID": "archiver-b"})
    assert {g.name for g in archiver.grants if g.resource == "group"} == {"archiver-b"}


def test_a_service_without_its_principal_is_named() -> None:
    with pytest.raises(ValueError, match="WA_INGEST_KAFKA__SASL_USERNAME and WA_INGEST_KAFKA__SASL_PASSWORD"):
        principal(KafkaSettings(sasl_password=SecretStr("p")), frozenset(), "WA_INGEST_KAFKA__")


@pytest.mark.parametrize(
    ("grant", "restype", "name", "operation"),
    [
        pytest.param(Grant("topic", "t", "Write"), ResourceType.TOPIC, "t", AclOperation.WRITE, id="topic"),
        pytest.param(Grant("group", "g", "Read"), ResourceType.GROUP, "g", AclOperation.READ, id="group"),
        pytest.param(
            Grant("cluster", CLUSTER, "IdempotentWrite"),
            ResourceType.BROKER,
            "kafka-cluster",
            AclOperation.IDEMPOTENT_WRITE,
            id="the cluster",
        ),
    ],
)
def test_a_grant_is_one_literal_allow_acl_from_any_host(
    grant: Grant, restype: ResourceType, name: str, operation: AclOperation
) -> None:
    binding = grant.binding("wa-ingest")
    assert (binding.restype, binding.name, binding.operation) == (restype, name, operation)
    assert binding.resource_pattern_type == ResourcePatternType.LITERAL
    assert (binding.principal, binding.host, binding.permission_type) == (
        "User:wa-ingest",
        "*",
        AclPermissionType.ALLOW,
    )
