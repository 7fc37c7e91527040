"""``python -m services.gateway``: run the send gateway under uvicorn with the settings from the environment; its
probes and metrics are on the ops port (``WA_GATEWAY_OPS_PORT``): every path of its own port is the Graph API's."""

from __future__ import annotations

import uvicorn

from services.core.http import server_options
from services.core.logs import configure_logging
from services.core.runtime import tune_gc
from services.core.settings import load_settings
from services.core.transport import plaintext_links, warn_plaintext
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings


def main() -> None:
    settings = load_settings(GatewaySettings)
    configure_logging(settings.log_level)
    warn_plaintext(plaintext_links(settings))
    app = create_app(settings)
    tune_gc()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        **server_options(settings.max_concurrency),
        lifespan="on",
        # Access logs would carry paths and queries of the Graph API calls; the bearer token is in a header and is
        # never logged either way.
        access_log=False,
        proxy_headers=False,
        date_header=False,
        log_level=settings.log_level.lower(),
        log_config=None,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
