"""Per-consent delivery status, published to the compacted ``delivery.status`` topic.

The consent API reads it to answer "when was my last delta delivered, and is delivery
failing, and why?" without reading the worker's memory. Updates are coalesced per consent
and flushed with the offset commits, so a busy consent costs one record per flush.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from portability.delivery.sender import Outcome
from portability.runtime import Runtime
from portability.wire.records import DeliveryStatusRecord
from portability.wire.schemas import SchemaName

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
        self._latest[consent_id] = {
            "consent_id": consent_id,
            "app_id": app_id,
            "last_sequence": sequence,
            "last_delivered_at": now,
            "failing": False,
            "last_error": None,
            "last_status": None,
            "updated_at": now,
        }
        self._dirty.add(consent_id)

    def failed(self, consent_id: str, app_id: str, outcome: Outcome) -> None:
        previous = self._latest.get(consent_id)
        self._latest[consent_id] = {
            "consent_id": consent_id,
            "app_id": app_id,
            "last_sequence": previous["last_sequence"] if previous else 0,
            "last_delivered_at": previous["last_delivered_at"] if previous else None,
            "failing": True,
            "last_error": outcome.reason,
            "last_status": outcome.status,
            "updated_at": datetime.now(UTC),
            "last_response": outcome.body_excerpt or None,
            "endpoint_disabled": bool(previous and previous.get("endpoint_disabled")),
        }
        self._dirty.add(consent_id)

    def endpoint_disabled(self, consent_id: str, app_id: str, reason: str) -> None:
        """The consent's endpoint was disabled: the app reads why in its consent status."""
        previous = self._latest.get(consent_id)
        self._latest[consent_id] = {
            "consent_id": consent_id,
            "app_id": app_id,
            "last_sequence": previous["last_sequence"] if previous else 0,
            "last_delivered_at": previous["last_delivered_at"] if previous else None,
            "failing": True,
            "last_error": f"endpoint disabled: {reason}",
            "last_status": previous["last_status"] if previous else None,
            "updated_at": datetime.now(UTC),
            "last_response": previous.get("last_response") if previous else None,
            "endpoint_disabled": True,
        }
        self._dirty.add(consent_id)

    async def flush(self, producer: AIOKafkaProducer) -> int:
        """Send every status that changed since the last flush; returns how many."""
        dirty, self._dirty = self._dirty, set()
        sends = []
        for consent_id in dirty:
            value = self._runtime.codec.encode(
                SchemaName.DELIVERY_STATUS, dict(self._latest[consent_id])
            )
            sends.append(
                await producer.send(
                    self._runtime.topics.delivery_status, value, key=consent_id.encode()
                )
            )
        await asyncio.gather(*sends)
        return len(sends)
