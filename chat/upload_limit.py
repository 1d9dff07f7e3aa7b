"""An ASGI middleware that refuses an upload that is too large before Django reads its body.

Django's ASGI handler reads a whole request body (spooling it to disk) before any view runs, so
the upload view's own size check comes after the bytes are in. For POSTs to the upload URL this
answers 413 at once when Content-Length is over CHAT_MAX_UPLOAD_BYTES plus room for the multipart
framing, and for a body without Content-Length (chunked) counts the bytes as they arrive and answers
413 once past it, without reading further. The view still checks the file's exact size."""

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UPLOAD_PATH = re.compile(r"^/api/rooms/[^/]+/attachments/?$")
MULTIPART_ALLOWANCE = 64 * 1024  # boundaries, part headers and the CSRF field around the file


def body_limit() -> int:
    return settings.CHAT_MAX_UPLOAD_BYTES + MULTIPART_ALLOWANCE


class UploadLimit:
    """Wraps the HTTP application; every other request passes through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not UPLOAD_PATH.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        limit = body_limit()
        length = _content_length(scope)
        if length is not None and length > limit:
            await _too_large(send)
            return
        over, total = False, 0

        async def counted() -> Message:
            nonlocal over, total
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                total += len(message.get("body", b""))
                if total > limit:
                    # Django's body reader takes a disconnect as an aborted request and answers
                    # nothing; this middleware answers instead, below.
                    over = True
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, counted, send)
        if over:
            await _too_large(send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Send) -> None:
    limit = settings.CHAT_MAX_UPLOAD_BYTES
    body = json.dumps({"error": {"code": "too_large",
                                 "detail": f"The upload is larger than the limit of {limit} bytes."}}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
