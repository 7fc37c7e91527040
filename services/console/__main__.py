"""``python -m services.console``: the review console's pages on :8083, its probes and metrics on :9083."""

from __future__ import annotations

import sys

import uvicorn

from services.actions.access import ArchiveAccess, open_access
from services.console.factory import NoSignIn, create_console_app
from services.console.settings import ConsoleSettings
from services.core.http import server_options
from services.core.logs import configure_logging
from services.core.settings import load_settings
from services.core.transport import plaintext_links, warn_plaintext
from services.retention.settings import RetentionSettings


def main() -> None:
    settings = load_settings(ConsoleSettings)
    retention = settings.archive_settings(load_settings(RetentionSettings))
    configure_logging(settings.log_level)
    # The console's own database login, and the bucket it reads with its own identity (retention's address).
    bucket = [link for link in plaintext_links(retention) if link.startswith("WA_RETENTION_S3__")]
    warn_plaintext([*plaintext_links(settings), *bucket])

    async def opener() -> ArchiveAccess:
        return await open_access(retention)

    try:
        app = create_console_app(settings, retention, opener)
    except NoSignIn as exc:
        print(f"invalid configuration for ConsoleSettings: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,  # an access log would hold the media URLs and the people's IP addresses
        log_level=settings.log_level.lower(),
        log_config=None,
        # The client address (the sign-in throttle counts it) from X-Forwarded-For, told by these proxies only.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        **server_options(settings.max_concurrency),
    )


if __name__ == "__main__":
    main()
