"""Producing many records at once: one batch per partition instead of one ``send`` each.

aiokafka's ``send`` costs some twenty microseconds a record (a future, a message set lookup,
a wake-up of the sender each time); a batch built here costs a few. The matcher produces its
deltas this way at the end of each batch it matches, and the delivery worker its message log
entries and ledger heads at each commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer

__all__ = ["batch_sends", "send_batches"]


async def batch_sends(
    producer: AIOKafkaProducer, topic: str, records: Iterable[tuple[int, bytes, bytes]]
) -> list[asyncio.Future[Any]]:
    """Hand ``(partition, key, value)`` records to the producer in one batch per partition
    (more when a batch fills), in order within each partition; the futures of their acks."""
    batches: dict[int, Any] = {}  # aiokafka's BatchBuilder (untyped)
    sends: list[asyncio.Future[Any]] = []
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
    return sends


async def send_batches(
    producer: AIOKafkaProducer, topic: str, records: Iterable[tuple[int, bytes, bytes]]
) -> None:
    """:func:`batch_sends`, and wait for the broker's acks."""
    await asyncio.gather(*await batch_sends(producer, topic, records))
