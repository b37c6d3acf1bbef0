"""At most 64 KiB of request body on every route: more is a 413 before any route sees it.

No request callgate serves needs more than a few hundred bytes; a bigger body is a mistake
or an attack, and reading it into memory would be the first harm. A body with a declared
``Content-Length`` is judged by that header alone (the server delivers no more than it
declares); a body without one (chunked) is read up to the limit here and handed on as one
message, so the routes behind see a whole body either way.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 65536


def too_large_body(limit: int = MAX_BODY_BYTES) -> dict[str, object]:
    """The 413 answer's JSON body (documented as ``TooLargeOut``)."""
    return {"error": "request too large", "limit_bytes": limit}


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413, unread."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit
        self._answer = json.dumps(too_large_body(limit), separators=(",", ":")).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and not chunked:
            if declared.isdigit() and int(declared) > self.limit:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        if not chunked:  # no body at all
            await self.app(scope, receive, send)
            return
        whole = await self._read(receive)
        if whole is None:
            await self._refuse(send)
            return
        await self.app(scope, _replay(whole, receive), send)

    async def _read(self, receive: Receive) -> Message | None:
        """The whole body as one message, or None when it grows past the limit."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: pass that on
                return message
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}

    async def _refuse(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self._answer)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": self._answer})


def _replay(first: Message, receive: Receive) -> Receive:
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
