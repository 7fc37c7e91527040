"""``python -m services.retention``: the admin API on :8082, its probes, metrics and documentation on :9082, and
the scheduled retention run."""

from __future__ import annotations

import sys

import uvicorn

from services.actions.access import ArchiveAccess, open_access
from services.core.http import server_options
from services.core.logs import configure_logging
from services.core.settings import load_settings
from services.core.transport import plaintext_links, warn_plaintext
from services.retention.api import create_admin_app
from services.retention.api.factory import NoApiSignIn
from services.retention.service import background_work
from services.retention.settings import RetentionSettings


def main() -> None:
    settings = load_settings(RetentionSettings)
    configure_logging(settings.log_level)
    warn_plaintext(plaintext_links(settings))

    async def opener() -> ArchiveAccess:
        return await open_access(settings)

    try:
        app = create_admin_app(settings, opener, background=background_work(settings))
    except NoApiSignIn as exc:
        print(f"invalid configuration for RetentionSettings: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        **server_options(settings.max_concurrency),
        access_log=False,
        log_level=settings.log_level.lower(),
        log_config=None,  # its records go through configure_logging's handler (text or JSON lines)
    )


if __name__ == "__main__":
    main()
