"""The delivery state of each consent, read from the compacted ``delivery.status`` topic.

The delivery worker publishes one record per consent (key ``consent_id``); a background
reader keeps the latest of each in memory, so ``GET /v1/consents/{id}/status`` never touches
Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from portability.errors import PortabilityError
from portability.runtime import Runtime
from portability.wire.records import DeliveryStatusRecord
from portability.wire.schemas import SchemaName

__all__ = ["DeliveryStatusBoard", "follow_delivery_status"]

_log = logging.getLogger(__name__)


class DeliveryStatusBoard:
    """The latest delivery status of each consent; thread-safe reads.

    ``available`` is False until a reader follows the topic: callers then report unknown
    (null) delivery fields rather than "never delivered".
    """

    def __init__(self) -> None:
        """An empty board that no reader follows yet."""
        self._latest: dict[str, DeliveryStatusRecord] = {}
        self._lock = threading.Lock()
        self.available = False

    def get(self, consent_id: str) -> DeliveryStatusRecord | None:
        """The latest status of ``consent_id``, if any was published."""
        with self._lock:
            return self._latest.get(consent_id)

    def all(self) -> list[DeliveryStatusRecord]:
        """Every consent's latest status (a copy), for the operator status page."""
        with self._lock:
            return list(self._latest.values())

    def apply(self, consent_id: str, record: DeliveryStatusRecord | None) -> None:
        """Keep ``record`` unless an update at least as new is known; None forgets."""
        with self._lock:
            if record is None:
                self._latest.pop(consent_id, None)
                return
            known = self._latest.get(consent_id)
            if known is None or known["updated_at"] <= record["updated_at"]:
                self._latest[consent_id] = record


async def follow_delivery_status(
    runtime: Runtime, board: DeliveryStatusBoard, stop: asyncio.Event
) -> None:
    """Read ``delivery.status`` from the beginning into ``board`` until ``stop`` is set.

    Undecodable records are skipped with a warning; Kafka errors are retried.
    """
    topic = runtime.topics.delivery_status
    consumer = runtime.kafka.reader("portability-api-status")
    await consumer.start()
    try:
        # pipeline_topics creates delivery.status with the pipeline's partition count.
        count = runtime.settings.partitions
        partitions = [TopicPartition(topic, number) for number in range(count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        board.available = True
        while not stop.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=200)
            except KafkaError as error:
                _log.warning("delivery.status reader: %s", error)
                await _pause(stop, 1.0)
                continue
            for messages in batches.values():
                for message in messages:
                    await _apply(runtime, board, message.key, message.value)
    finally:
        board.available = False
        await consumer.stop()


async def _apply(
    runtime: Runtime, board: DeliveryStatusBoard, key: bytes | None, value: bytes | None
) -> None:
    if key is None:
        return
    consent_id = key.decode(errors="replace")
    if value is None:
        board.apply(consent_id, None)
        return
    try:
        decoded = await runtime.codec.decode_fetching(SchemaName.DELIVERY_STATUS, value)
    except PortabilityError as error:
        _log.warning("delivery.status: skipping undecodable record of %s: %s", consent_id, error)
        return
    board.apply(consent_id, decoded)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
