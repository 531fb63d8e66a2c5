"""Parking a lane: its records copied to ``deliveries.retry`` with their retry state.

A lane that must wait long (``delivery_park_after_s`` or more, an open circuit, a disabled
endpoint) is parked, and stays parked until it empties: each record whose retry state
changed since its last copy is copied again, with that state in headers (see
:mod:`~portability.delivery.parking` for the headers). The source offset is released only
when the copy comes back from the broker (see :meth:`Intake.accept_parked
<portability.delivery.intake.Intake>`), so a crash loses nothing.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from portability.delivery.lanes import Item, Lane
from portability.delivery.stats import DeliveryStats
from portability.wire.headers import REPLAYED_FROM_HEADER
from portability.wire.topics import partition_for_consent

__all__ = ["Parker"]

# The role's logger, whichever part of the worker writes: operators filter its lines by one name.
log = logging.getLogger("portability.delivery.worker")


class Parker:
    """Copies lanes' records to the retry topic, each time their retry state changes."""

    def __init__(
        self, producer: AIOKafkaProducer, retry_topic: str, partitions: int, stats: DeliveryStats
    ) -> None:
        self._producer = producer
        self._retry_topic = retry_topic
        self._partitions = partitions
        self._stats = stats

    async def park(self, lane: Lane) -> None:
        """Copy the lane's records whose stored retry state is stale to the retry topic."""
        lane.parked = True
        stale = [
            item
            for item in list(lane.queue)[lane.in_flight :]
            if not item.parking and item.stored is not item.ticket
        ]
        if not stale:
            return
        # Marked before sending: the copy may be read back before the acks are.
        for item in stale:
            item.parking, item.copied = True, item.ticket
        partition = partition_for_consent(lane.consent_id, self._partitions)
        try:
            acks = [
                await self._producer.send(
                    self._retry_topic,
                    item.raw,
                    key=lane.consent_id.encode(),
                    partition=partition,
                    headers=_copy_headers(item),
                )
                for item in stale
            ]
            await asyncio.gather(*acks)
        except KafkaError as error:
            for item in stale:
                item.parking, item.copied = False, None
            log.warning("cannot park consent %s (retried): %s", lane.consent_id, error)
            return
        self._stats.parked += len(stale)


def _copy_headers(item: Item) -> list[tuple[str, bytes]]:
    headers = item.ticket.headers()
    if item.replayed_from is not None:
        headers.append((REPLAYED_FROM_HEADER, item.replayed_from))
    return headers
