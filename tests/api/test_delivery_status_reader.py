"""The status route's source: a reader of the compacted delivery.status topic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from portability.api import DeliveryStatusBoard, follow_delivery_status
from portability.runtime import Runtime
from portability.wire.schemas import SchemaName
from waiting import wait_until

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_reader_keeps_the_latest_status_of_each_consent(runtime: Runtime) -> None:
    producer = runtime.kafka.producer("test-status")
    await producer.start()
    try:
        for sequence in (1, 2):
            value = runtime.codec.encode(
                SchemaName.DELIVERY_STATUS,
                {
                    "consent_id": "cns_a",
                    "app_id": "app_a",
                    "last_sequence": sequence,
                    "last_delivered_at": NOW,
                    "failing": sequence == 2,
                    "last_error": "HTTP 503" if sequence == 2 else None,
                    "last_status": 503 if sequence == 2 else None,
                    "updated_at": NOW.replace(second=sequence),
                },
            )
            await producer.send_and_wait(
                runtime.topics.delivery_status, value, key=b"cns_a", partition=1
            )
        await producer.send_and_wait(runtime.topics.delivery_status, b"junk", key=b"cns_b")
    finally:
        await producer.stop()
    board, stop = DeliveryStatusBoard(), asyncio.Event()

    def latest_read() -> bool:
        status = board.get("cns_a")
        return status is not None and status["last_sequence"] == 2

    reader = asyncio.create_task(follow_delivery_status(runtime, board, stop))
    try:
        await wait_until(
            latest_read,
            "the latest status of cns_a read",
            timeout_s=20.0,
        )
        status = board.get("cns_a")
        assert status is not None
        assert status["last_sequence"] == 2
        assert board.available
        assert status["failing"] is True
        assert status["last_error"] == "HTTP 503"
        assert board.get("cns_b") is None  # undecodable: skipped
    finally:
        stop.set()
        await asyncio.wait_for(reader, timeout=10)
    assert not board.available
