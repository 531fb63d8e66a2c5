"""The one way tests wait: poll a condition until it holds, and fail after a bound.

No test sleeps for a fixed time hoping something happened; it names what it waits for, and
a timeout says so.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

__all__ = ["POLL_S", "wait_until"]

POLL_S = 0.02


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    what: str = "the condition",
    timeout_s: float = 30.0,
    poll_s: float = POLL_S,
) -> None:
    """Poll ``predicate`` (sync or async) until it is true.

    Raises:
        AssertionError: Not true within ``timeout_s``; the message names ``what``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout_s} s: {what}")
        await asyncio.sleep(poll_s)
