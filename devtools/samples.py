"""Where the repository keeps its sample data and its demo configuration: read by the tests, the benchmarks and
``make run``, never by the services (an installed wheel has neither file)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from services.core.settings import read_env_file

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_ENV_FILE = REPO_ROOT / "deploy" / "local" / "demo.env"
# Meta's Cloud API webhook samples, one POST body per file (SOURCES.md says where each comes from).
PAYLOADS_DIR = REPO_ROOT / "tests" / "data" / "whatsapp"


def payloads_dir() -> Path:
    """The sample webhooks (tests/data/whatsapp in the repository), overridable with WA_PAYLOADS_DIR."""
    override = os.environ.get("WA_PAYLOADS_DIR")
    return Path(override) if override else PAYLOADS_DIR


def load_demo_env(path: Path = DEMO_ENV_FILE) -> dict[str, str]:
    """The demo configuration (deploy/local/demo.env), parsed the way the services' tools read it."""
    return read_env_file(path)


# The services that connect to the local broker's SASL listener as principals of their own (demo.env).
# RETENTION and CONSOLE: the action layer's principal (wa-actions), which publishes the decisions about held sends.
KAFKA_PRINCIPAL_SERVICES = ("INGEST", "ARCHIVER", "RELAY", "GATEWAY", "RETENTION", "CONSOLE")
_PRINCIPAL_FIELDS = ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD")


def as_kafka_super_user(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` (the demo configuration) with ingest and the archiver connecting to Kafka's plaintext listener, as
    the local broker's super user, instead of as their principals. The tests and the benchmarks give the services
    topics and groups of their own, which the principals' ACLs (the demo's topics and group only) refuse; the
    principals themselves are proven by tests/integration/test_kafka_acl.py."""
    changed = dict(env)
    for service in KAFKA_PRINCIPAL_SERVICES:
        prefix = f"WA_{service}_KAFKA__"
        for field in _PRINCIPAL_FIELDS:
            changed.pop(prefix + field, None)
        changed[prefix + "BOOTSTRAP_SERVERS"] = f"127.0.0.1:{env['WA_KAFKA_PORT']}"
    return changed
