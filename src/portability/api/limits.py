"""A request body size limit, enforced while the body streams in.

A pure ASGI middleware rather than a check in the routes: FastAPI reads and parses the whole
body before any route or dependency runs, so a 200 MB body would already be in memory (and
then parsed) by the time a route could refuse it. Here a declared ``Content-Length`` over
the limit is refused before a byte of the body is read, and a body without one (chunked) is
counted as it arrives and refused as soon as it passes the limit: the API never holds more
than the limit (plus the one chunk that crossed it).
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portability.api.errors import ApiError

__all__ = ["BodyLimit", "BodyTooLargeError"]

_log = logging.getLogger(__name__)

# The client may still be sending: the connection cannot serve another request, so close it
# (uvicorn closes after the response instead of reading the rest of the body to discard it).
_CLOSE = {"Connection": "close"}


def _too_large_message(limit: int) -> str:
    return (
        f"the request body is larger than this API accepts ({limit} bytes): send a smaller "
        "body (registration and consent requests are a few hundred bytes)"
    )


class BodyTooLargeError(HTTPException, ApiError):
    """The body passed the limit while it was being read (413).

    An ``HTTPException`` first, on purpose: FastAPI turns any other error raised while it reads
    the body into a 400 "error parsing the body", but re-raises an ``HTTPException`` as it is,
    so the API's error handler answers it with the 413 and its message. An :class:`ApiError`
    too, saying the same, as every error of the API is.
    """

    def __init__(self, limit: int) -> None:
        """The error for a body over ``limit`` bytes."""
        message = _too_large_message(limit)
        # Each base sets its own attributes (their constructors take different arguments).
        HTTPException.__init__(self, 413, detail=message, headers=_CLOSE)
        ApiError.__init__(self, 413, "too_large", message, _CLOSE)


class BodyLimit:
    """Refuse (413) request bodies over ``max_bytes``, without reading more than that.

    Args:
        app: The application to protect.
        max_bytes: The largest body passed on.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        """Wrap ``app``."""
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request (other scopes pass through)."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self._max:
            await self._refuse(scope, receive, send)
            return
        started = False
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max:
                    raise BodyTooLargeError(self._max)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._app(scope, counting_receive, tracking_send)
        except BodyTooLargeError:
            # Only reached when the body was read outside the API's error handling (it
            # answers the error itself otherwise).
            if started:
                _log.info("request body over %d bytes after the response started", self._max)
                return
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = {"error": "too_large", "message": _too_large_message(self._max)}
        await JSONResponse(body, status_code=413, headers=_CLOSE)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared body size; None when absent or unreadable (then the count decides)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
