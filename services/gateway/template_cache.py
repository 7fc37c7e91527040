"""Template bodies read from the Graph API and cached, for the text a template message showed the customer.

``GET {upstream}/{version}/{waba-id}/message_templates?name=…`` with the bearer token of the send that names the
template (the gateway holds no token of its own): Meta's template objects, of which the one in the send's language
is rendered (services/gateway/templates.py). A definition is cached for ``ttl_s`` by (WABA, name, language): a
template's text changes only through a new approval, and a send must not wait on a read it made a minute ago.
A read that fails (Meta unreachable, an error answer, no such template) gives None: the send is archived with its
template's name and parameters, without the text.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlencode

import orjson

from services.core.http1 import Http1Pool
from services.gateway.metrics import GatewayMetrics
from services.gateway.templates import choose_template, rendered_text

# Templates are few per business; a bound keeps a caller naming random templates from growing the cache.
MAX_ENTRIES = 4096
# A template list is a few KB; a business with many languages, some tens.
MAX_ANSWER_BYTES: Final = 4 * 1024 * 1024


class TemplateCache:
    def __init__(
        self,
        upstream: Http1Pool,
        *,
        ttl_s: float,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._upstream = upstream
        self._ttl_s = ttl_s
        self._metrics = metrics
        self._clock = clock
        self._entries: dict[tuple[str, str, str | None], tuple[float, dict[str, Any] | None]] = {}

    async def text(self, waba_id: str, version: str, send: dict[str, Any], authorization: bytes) -> str | None:
        template = await self.definition(waba_id, version, send, authorization)
        return rendered_text(template, send) if template is not None else None

    async def definition(
        self, waba_id: str, version: str, send: dict[str, Any], authorization: bytes
    ) -> dict[str, Any] | None:
        """The definition (Meta's template object: name, category, components) of the template a send names, or
        None."""
        name = send.get("name")
        language = send.get("language")
        code = language.get("code") if isinstance(language, dict) else None
        if not isinstance(name, str) or not name:
            return None
        return await self._definition(waba_id, version, name, code if isinstance(code, str) else None, authorization)

    async def _definition(
        self, waba_id: str, version: str, name: str, language: str | None, authorization: bytes
    ) -> dict[str, Any] | None:
        key = (waba_id, name, language)
        now = self._clock()
        cached = self._entries.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        query = urlencode({"name": name, "fields": "name,language,category,components"})
        response = await self._upstream.request(
            "GET",
            f"/{version}/{waba_id}/message_templates?{query}",
            [(b"authorization", authorization)],
            max_answer_bytes=MAX_ANSWER_BYTES,
        )
        if response.status != 200:
            self._metrics.template_reads.labels("failed").inc()
            return None
        document = orjson.loads(response.body)
        data = document.get("data") if isinstance(document, dict) else None
        template = choose_template(data, language)
        self._metrics.template_reads.labels("found" if template is not None else "missing").inc()
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (now + self._ttl_s, template)
        return template
