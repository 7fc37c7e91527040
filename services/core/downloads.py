"""A file handed over as a download (the console's and the admin API's export files): streamed piece by piece,
its length announced, saved by the browser rather than shown, never cached."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse


def file_download(name: str, size: int, pieces: AsyncIterator[bytes]) -> StreamingResponse:
    """``pieces`` streamed as ``name`` (``size`` bytes), closed when the response ends, also when the client goes
    away. Only characters that need no quoting reach the header's file name; a sandboxing Content-Security-Policy
    keeps a browser from running anything the file holds, should it show it."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for piece in pieces:
                yield piece
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(
        body(),
        media_type="application/octet-stream",
        headers={
            "content-length": str(size),
            "content-disposition": f'attachment; filename="{re.sub(r"[^A-Za-z0-9._-]", "_", name)}"',
            "content-security-policy": "default-src 'none'; sandbox",
            "cache-control": "no-store",
        },
    )
