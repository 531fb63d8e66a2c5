"""Per-consent delivery status, published to the compacted ``delivery.status`` topic.

The consent API reads it to answer "when was my last delta delivered, and is delivery
failing, and why?" without reading the worker's memory. Updates are coalesced per consent
and flushed with the offset commits, so a busy consent costs one record per flush.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from portability.broker.batches import send_batches
from portability.delivery.sender import Outcome
from portability.runtime import Runtime
from portability.wire.records import DeliveryStatusRecord
from portability.wire.schemas import SchemaName
from portability.wire.topics import partition_for_consent

__all__ = ["StatusBoard"]


class StatusBoard:
    """The latest delivery status of each consent this worker delivers to."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._latest: dict[str, DeliveryStatusRecord] = {}
        self._dirty: set[str] = set()

    def get(self, consent_id: str) -> DeliveryStatusRecord | None:
        return self._latest.get(consent_id)

    def delivered(self, consent_id: str, app_id: str, sequence: int) -> None:
        now = datetime.now(UTC)
        self._update(
            consent_id,
            app_id,
            last_sequence=sequence,
            last_delivered_at=now,
            failing=False,
            last_error=None,
            last_status=None,
            last_response=None,
            endpoint_disabled=False,
        )

    def failed(self, consent_id: str, app_id: str, outcome: Outcome) -> None:
        self._update(
            consent_id,
            app_id,
            failing=True,
            last_error=outcome.reason,
            last_status=outcome.status,
            last_response=outcome.body_excerpt or None,
        )

    def snapshot_delivered(self, consent_id: str, app_id: str, epoch: int) -> None:
        """The last page of the consent's snapshot ``epoch`` was delivered."""
        self._update(consent_id, app_id, snapshot_epoch_delivered=epoch)

    def endpoint_disabled(self, consent_id: str, app_id: str, reason: str) -> None:
        """The consent's endpoint was disabled: the app reads why in its consent status."""
        self._update(
            consent_id,
            app_id,
            failing=True,
            last_error=f"endpoint disabled: {reason}",
            endpoint_disabled=True,
        )

    def _update(self, consent_id: str, app_id: str, **changes: Any) -> None:
        """The consent's status with ``changes``; what is not changed stays as it was."""
        record: DeliveryStatusRecord = self._latest.get(consent_id) or {
            "consent_id": consent_id,
            "app_id": app_id,
            "last_sequence": 0,
            "last_delivered_at": None,
            "failing": False,
            "last_error": None,
            "last_status": None,
            "updated_at": datetime.now(UTC),
            "last_response": None,
            "endpoint_disabled": False,
            "snapshot_epoch_delivered": 0,
        }
        self._latest[consent_id] = {**record, **changes, "updated_at": datetime.now(UTC)}  # type: ignore[typeddict-item]
        self._dirty.add(consent_id)

    async def flush(self, producer: AIOKafkaProducer) -> int:
        """Send every status that changed since the last flush; returns how many.

        In one batch per partition (a ``send`` each cost about as much as a delta's whole
        request share), each consent's in the partition Kafka's default partitioner gives its
        key, as before: a compacted topic keeps one record per key only within a partition.
        """
        dirty, self._dirty = self._dirty, set()
        if not dirty:
            return 0
        topic = self._runtime.topics.delivery_status
        partitions = len(await producer.partitions_for(topic))
        encode = self._runtime.codec.encode
        await send_batches(
            producer,
            topic,
            (
                (
                    partition_for_consent(consent_id, partitions),
                    consent_id.encode(),
                    encode(SchemaName.DELIVERY_STATUS, dict(self._latest[consent_id])),
                )
                for consent_id in dirty
            ),
        )
        return len(dirty)
