"""stop_consumer: aiokafka's stray CancelledError on stop() does not end the caller's task."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer

from portability.broker import stop_consumer


class _CancellingStop:
    """Stops as aiokafka's consumer does with the broker gone mid-fetch."""

    stopped = False

    async def stop(self) -> None:
        self.stopped = True
        raise asyncio.CancelledError


def _consumer(fake: Any) -> AIOKafkaConsumer:
    return cast(AIOKafkaConsumer, fake)


async def test_a_cancelled_fetch_inside_stop_is_not_the_callers_cancellation() -> None:
    fake = _CancellingStop()

    await stop_consumer(_consumer(fake))  # returns: the task goes on

    assert fake.stopped


async def test_the_callers_own_cancellation_still_cancels() -> None:
    started = asyncio.Event()

    class _SlowStop:
        async def stop(self) -> None:
            started.set()
            await asyncio.Event().wait()  # until cancelled

    task = asyncio.create_task(stop_consumer(_consumer(_SlowStop())))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
