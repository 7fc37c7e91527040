"""The action layer, the admin API and the CLI on one prefix (the ``stack`` fixture of
tests/integration/conftest.py), and the operators' credentials."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client import CollectorRegistry

from devtools import pipeline
from services.actions.layer import Actions
from services.retention.settings import RetentionSettings
from tests.helpers.reader_cases import ReaderCases

READER = {"authorization": f"Bearer {pipeline.READER_TOKEN}"}  # "test-reader" in pipeline.retention_settings


DPO = {"authorization": f"Bearer {pipeline.DPO_TOKEN}"}  # "test-dpo"


CLI_OPERATOR = "cli-operator-of-test-actions"


@dataclass
class Stack:
    settings: RetentionSettings
    actions: Actions  # in-process, counting into ``registry``
    registry: CollectorRegistry
    api: httpx.AsyncClient  # the admin API, counting into ``api_registry``
    api_registry: CollectorRegistry
    cases: ReaderCases  # cases that let the test's readers read (closed when the test ends)


def counted(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0
