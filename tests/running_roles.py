"""Run a pipeline role's loop for the span of a ``with`` block, as its process would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from portability.delivery import DeliveryWorker

__all__ = ["running"]

STOP_TIMEOUT_S = 10.0


@contextlib.asynccontextmanager
async def running(worker: DeliveryWorker) -> AsyncIterator[DeliveryWorker]:
    """Start ``worker``, run its loop, and stop it (bounded) when the block ends."""
    await worker.start()
    task = asyncio.create_task(worker.run(), name="delivery worker")
    try:
        yield worker
    finally:
        await worker.stop()
        await asyncio.wait_for(task, STOP_TIMEOUT_S)
