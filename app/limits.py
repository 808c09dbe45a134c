"""A limit on the size of a request's body, enforced before the body is received whole.

Without it, a 200 MiB upload is spooled to disk in full before the route sees it and refuses it. A request
that declares a larger ``Content-Length`` is answered 413 at once, without reading its body; one sent in
chunks (no length) is read only up to the limit, then answered 413. The message states the real limit.
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _mib(n: int) -> str:
    return f"{n / 2 ** 20:g} MiB" if n >= 2 ** 20 else f"{n:,} bytes"


def _declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, or None when it has none (or none that is a number)."""
    for name, value in scope.get("headers") or []:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimit:
    """ASGI middleware: requests whose body exceeds ``max_bytes`` get a JSON 413 ``{status, error, message}``
    naming ``what`` the limit is for (``allowed``: its size in the message, e.g. the upload limit)."""

    def __init__(self, app: Callable, max_bytes: int, *, allowed: int | None = None,
                 what: str = "a request body") -> None:
        self.app, self.max_bytes, self.allowed, self.what = app, int(max_bytes), allowed or int(max_bytes), what

    async def _refuse(self, send: Send, size: int | None) -> None:
        got = f"of {_mib(size)} " if size is not None else ""
        message = (f"request body {got}is larger than the {_mib(self.allowed)} allowed for {self.what}; "
                   f"nothing of it was kept")
        body = json.dumps({"status": 413, "error": "request too large", "message": message}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None:         # the server holds the body to its Content-Length
            if declared > self.max_bytes:
                await self._refuse(send, declared)
            else:
                await self.app(scope, receive, send)
            return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        messages, total = [], 0
        while True:                      # chunked: read up to the limit before the app sees a byte
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                await self._refuse(send, None)
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)
