"""A media file of an opened conversation: ``GET /media/{event_id}``.

The only identifier in a console URL: a media file's event id (a hash), served only under a session that gave a
reason for a conversation holding it, and audited with that reason.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Final

from fastapi import APIRouter, Response
from fastapi.responses import StreamingResponse

from services.actions.layer import MediaFile
from services.console.deps import ActionsDep, CurrentSession
from services.core.reader import ContainerError, RecordTampered
from services.core.refusals import NotFound

log = logging.getLogger("wa_archive.console")

router = APIRouter()

# Shown in the browser; anything else is downloaded as application/octet-stream.
MEDIA_INLINE: Final = ("image/jpeg", "image/png", "image/webp", "image/gif", "audio/", "video/")


async def media_chunks(found: MediaFile) -> AsyncIterator[bytes]:
    """A media file's chunks for the response; a file found corrupt midway ends the response early (the browser
    sees fewer bytes than announced) and is logged, without the file's name or anything of its content."""
    try:
        async for chunk in found.chunks:
            yield chunk
    except (RecordTampered, ContainerError) as exc:
        log.error("media %s failed verification while being served: %s", found.event_id, type(exc).__name__)
        raise
    finally:
        await found.chunks.aclose()


def media_response(found: MediaFile) -> StreamingResponse:
    """The file, streamed as it is decrypted, one authenticated chunk at a time: a 100 MB document costs a chunk of
    memory, not the file. The length is announced, so that a download cut by a chunk found corrupt midway is seen as
    incomplete by the browser. Sandboxed: a file opened in the browser runs nothing."""
    inline = found.mime_type.startswith(MEDIA_INLINE)
    disposition = "inline" if inline else "attachment"
    return StreamingResponse(
        media_chunks(found),
        media_type=found.mime_type if inline else "application/octet-stream",
        headers={
            "content-length": str(found.size),
            "content-disposition": f'{disposition}; filename="{found.filename}"',
            "content-security-policy": "default-src 'none'; sandbox",
        },
    )


@router.get("/media/{event_id}")
async def media(event_id: str, session: CurrentSession, actions: ActionsDep) -> Response:
    # Only a file of a conversation opened in this session, audited with the reason given for that one.
    for opened in session.reasons.values():
        try:
            found = await actions.media_file(
                session.operator, event_id=event_id, subject_refs=opened.subject_refs, reason=opened.audit_reason()
            )
        except NotFound:
            continue
        return media_response(found)
    raise NotFound("no such media file")
