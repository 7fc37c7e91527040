"""``python -m services.relay``: deliver the journal's webhooks to the company's existing systems, until SIGTERM."""

# ruff: noqa: E402 -- the unused extras are refused before the imports below would load them.
from __future__ import annotations

from services.core.runtime import skip_unused_extras

skip_unused_extras()

import asyncio

import uvloop

from services.core.logs import configure_logging
from services.core.runtime import tune_gc
from services.core.settings import load_settings
from services.core.transport import plaintext_links, warn_plaintext
from services.relay.service import install_stop_signals, run_relay
from services.relay.settings import RelaySettings


async def amain(settings: RelaySettings) -> None:
    stop = asyncio.Event()
    install_stop_signals(stop)
    await run_relay(settings, stop)


def main() -> None:
    settings = load_settings(RelaySettings)
    configure_logging(settings.log_level)
    warn_plaintext(plaintext_links(settings))
    tune_gc()
    uvloop.run(amain(settings))


if __name__ == "__main__":
    main()
