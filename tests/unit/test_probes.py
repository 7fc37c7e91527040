"""The one answer to the liveness and readiness probes (services/core/ops_http.py), as the ops port serves it."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.core.ops_http import HEALTHZ, PROBE_PATHS, READYZ, ops_app, probe

pytestmark = pytest.mark.unit


def never() -> bool:
    raise AssertionError("readiness is not asked of a liveness probe")


@pytest.mark.parametrize(
    ("path", "ready", "answer"),
    [
        pytest.param(HEALTHZ, never, (200, b"ok"), id="alive, readiness not asked"),
        pytest.param(READYZ, lambda: True, (200, b"ready"), id="ready"),
        pytest.param(READYZ, lambda: False, (503, b"not ready"), id="not ready"),
    ],
)
def test_probe(path: str, ready: Any, answer: tuple[int, bytes]) -> None:
    assert probe(path, ready) == answer


def test_probe_says_why_not_ready() -> None:
    assert probe(READYZ, lambda: False, b"kafka not connected") == (503, b"kafka not connected")


def test_probe_refuses_another_path() -> None:
    with pytest.raises(ValueError, match="not a probe"):
        probe("/metrics", lambda: True)


def answer(path: str, ready: bool) -> tuple[int, bytes, bytes]:
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def serve() -> None:
        app = ops_app(CollectorRegistry(), lambda: ready)
        await app({"type": "http", "path": path, "method": "GET", "headers": []}, receive, send)

    asyncio.run(serve())
    start, body = sent
    return start["status"], dict(start["headers"])[b"content-type"], body["body"]


@pytest.mark.parametrize("path", sorted(PROBE_PATHS))
@pytest.mark.parametrize("ready", [True, False])
def test_ops_port_answers_what_probe_says(path: str, ready: bool) -> None:
    status, content_type, body = answer(path, ready)
    assert (status, body) == probe(path, lambda: ready)
    assert content_type == b"text/plain; charset=utf-8"
