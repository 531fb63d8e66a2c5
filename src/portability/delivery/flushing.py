"""A background flush: what the worker notes on its hot path, produced every so often.

The message log's entries and the ledger's heads are noted in memory as requests finish and
produced by a task of their own, so that no request waits on the broker for them; a failed
flush keeps what it could not produce for the next one, and stopping flushes once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

__all__ = ["Flushing", "send_batches"]

log = logging.getLogger("portability.delivery.worker")


class Flushing:
    """Calls ``flush`` every ``interval_s`` until stopped, and once more when stopping."""

    def __init__(self, flush: Callable[[], Awaitable[None]], interval_s: float, what: str) -> None:
        self._flush = flush
        self._interval_s = interval_s
        self._what = what
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"flush {self._what}")

    async def stop(self) -> None:
        """Stop the task and flush what is left (the producer must still run)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(KafkaError):
            await self._flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self._flush()
            except KafkaError as error:
                log.warning("%s not produced yet (retried): %s", self._what, error)


async def send_batches(
    producer: AIOKafkaProducer, topic: str, records: Iterable[tuple[int, bytes, bytes]]
) -> None:
    """Produce ``(partition, key, value)`` records in one batch per partition (more when a
    batch fills) and wait for the broker's acks.

    A batch built here costs a few microseconds a record, where ``send`` costs some twenty:
    the log and the ledger write about one record per request the worker makes.
    """
    batches: dict[int, Any] = {}  # aiokafka's BatchBuilder (untyped)
    sends = []
    for partition, key, value in records:
        batch = batches.get(partition)
        if batch is None:
            batch = batches[partition] = producer.create_batch()
        if batch.append(timestamp=None, key=key, value=value) is None:
            sends.append(await producer.send_batch(batch, topic, partition=partition))
            batch = batches[partition] = producer.create_batch()
            batch.append(timestamp=None, key=key, value=value)
    for partition, batch in batches.items():
        sends.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*sends)
