"""``python -m services.ingest``: run ingest under uvicorn with the settings from the environment."""

from __future__ import annotations

import uvicorn

from services.core.http import server_options
from services.core.logs import configure_logging
from services.core.runtime import tune_gc
from services.core.settings import load_settings
from services.core.transport import plaintext_links, warn_plaintext
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings


def main() -> None:
    settings = load_settings(IngestSettings)
    configure_logging(settings.log_level)
    warn_plaintext(plaintext_links(settings))
    app = create_app(settings)
    tune_gc()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        # httptools with a bound on the request head, at most max_concurrency at once, no Server header.
        **server_options(settings.max_concurrency),
        lifespan="on",
        # Access logs would carry query strings (the verify token) and add cost on the hot path.
        access_log=False,
        # Meta connects directly or through an ingress that is trusted by configuration, not by headers; the
        # per-request header rewriting and the Date header are cost on the hot path.
        proxy_headers=False,
        date_header=False,
        log_level=settings.log_level.lower(),
        log_config=None,  # its records go through configure_logging's handler (text or JSON lines)
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
