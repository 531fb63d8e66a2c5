"""Serving a :class:`ReceivingApp` over real HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from portability.receiver.app import ReceivingApp

__all__ = ["run_receiver"]

# Handlers answer in microseconds; do not let a stuck client hold a test's teardown for 60 s.
_SHUTDOWN_TIMEOUT_S: Final = 2.0


@contextlib.asynccontextmanager
async def run_receiver(
    app: ReceivingApp, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve ``app`` until the block exits.

    Args:
        app: The receiver whose state the server feeds.
        host: Interface to listen on.
        port: Port to listen on; 0 picks a free one.

    Yields:
        The base URL, e.g. ``"http://127.0.0.1:54321"``; webhooks go to
        ``f"{base}/webhooks/{app_id}"``.
    """
    runner = web.AppRunner(app.web_app(), shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound_port = runner.addresses[0][1]
        url_host = f"[{host}]" if ":" in host else host
        yield f"http://{url_host}:{bound_port}"
    finally:
        await runner.cleanup()
        await app.aclose()
