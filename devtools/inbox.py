"""The "existing inbox" of the local system: a small receiver standing for the company's own systems (Chatwoot, a
CRM) that the relay (services/relay) feeds. It verifies ``X-Hub-Signature-256`` over the bytes it gets, with the
app secrets it is given, as a standard receiver of Meta's webhooks does, and keeps counts only: never a message's
text. Tests use it too (:attr:`InboxReceiver.received` keeps the deliveries when ``keep`` is set, and
:meth:`InboxReceiver.fail_with` makes it answer an error).

    python -m devtools.inbox --port 8087 --secret demo-app-secret-local-only
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from devtools.serving import serve_asgi
from services.ingest.signature import SignatureVerifier

log = logging.getLogger("wa_archive.devtools.inbox")

Message = MutableMapping[str, Any]


@dataclass(frozen=True, slots=True)
class Delivery:
    body: bytes
    headers: dict[str, str]


class InboxReceiver:
    """ASGI: ``POST`` on any path → 200 when the signature verifies (401 otherwise), or the status set by
    :meth:`fail_with`. Counts ``verified`` and ``refused``."""

    def __init__(self, secrets: list[bytes], *, keep: bool = False) -> None:
        self.verifier = SignatureVerifier(secrets)
        self.keep = keep
        self.received: list[Delivery] = []
        self.verified = 0
        self.refused = 0
        self.failing: int | None = None

    def fail_with(self, status: int | None) -> None:
        """Answer every POST with ``status`` (None: verify and accept again)."""
        self.failing = status

    async def __call__(
        self, scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        headers = {bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1") for k, v in scope["headers"]}
        if self.failing is not None:
            status = self.failing
        elif scope["method"] == "POST" and self.verifier.verify(body, headers.get("x-hub-signature-256")):
            status = 200
            self.verified += 1
            if self.keep:
                self.received.append(Delivery(body, headers))
        else:
            status = 401
            self.refused += 1
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


async def serve(port: int, secrets: list[bytes], report_every_s: float) -> None:
    inbox = InboxReceiver(secrets)
    async with serve_asgi(inbox, lifespan="off", port=port) as url:
        log.info("inbox listening on %s", url)
        reported = (0, 0)
        while True:
            await asyncio.sleep(report_every_s)
            if (inbox.verified, inbox.refused) != reported:
                reported = (inbox.verified, inbox.refused)
                log.info("inbox: %d deliveries verified, %d refused", inbox.verified, inbox.refused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8087)
    parser.add_argument("--secret", action="append", required=True, help="an app secret it verifies with")
    parser.add_argument("--report-every", type=float, default=5.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    asyncio.run(serve(args.port, [s.encode() for s in args.secret], args.report_every))


if __name__ == "__main__":
    main()
