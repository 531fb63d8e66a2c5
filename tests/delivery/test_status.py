"""The delivery status board publishes the latest state per consent, coalesced."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from portability.delivery import Outcome, StatusBoard
from portability.runtime import Runtime
from portability.wire import SchemaName
from portability.wire.records import DeliveryStatusRecord


async def read_all(runtime: Runtime, topic: str, expected: int) -> list[DeliveryStatusRecord]:
    reader = runtime.kafka.reader("status-reader")
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or ()]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        records: list[DeliveryStatusRecord] = []
        for _ in range(50):
            batch = await reader.getmany(timeout_ms=100)
            records += [
                runtime.codec.decode(SchemaName.DELIVERY_STATUS, r.value)
                for part in batch.values()
                for r in part
            ]
            if len(records) >= expected:
                break
        return records
    finally:
        await reader.stop()


async def test_flush_publishes_latest_status_per_consent(runtime: Runtime) -> None:
    board = StatusBoard(runtime)
    board.delivered("c1", "app1", 1)
    board.delivered("c1", "app1", 2)  # coalesced with the first
    board.delivered("c2", "app1", 5)
    board.failed("c2", "app1", Outcome(False, 503, "HTTP 503", retriable=True))
    producer = runtime.kafka.producer("status-test")
    await producer.start()
    try:
        assert await board.flush(producer) == 2
        assert await board.flush(producer) == 0  # nothing changed since
    finally:
        await producer.stop()

    records = {
        r["consent_id"]: r for r in await read_all(runtime, runtime.topics.delivery_status, 2)
    }
    assert set(records) == {"c1", "c2"}
    assert records["c1"]["last_sequence"] == 2
    assert records["c1"]["failing"] is False
    assert records["c2"]["last_sequence"] == 5  # kept from the last success
    assert records["c2"]["failing"] is True
    assert records["c2"]["last_status"] == 503
    assert records["c2"]["last_error"] == "HTTP 503"
    assert records["c2"]["last_delivered_at"] is not None


async def test_each_status_lands_where_kafkas_default_partitioner_puts_its_key(
    runtime: Runtime,
) -> None:
    # Batched per partition, the board must still place a consent's status where a plain
    # send() put it (and other workers do): compaction keeps one record per key per partition.
    board = StatusBoard(runtime)
    consents = [f"c_{index:03d}" for index in range(24)]
    for consent_id in consents:
        board.delivered(consent_id, "app1", 1)
    topic = runtime.topics.delivery_status
    producer = runtime.kafka.producer("status-partition-test")
    await producer.start()
    try:
        assert await board.flush(producer) == len(consents)
        partitions = sorted(await producer.partitions_for(topic))
    finally:
        await producer.stop()
    assert len(partitions) > 1  # else every key lands in one partition and this proves nothing

    reader = runtime.kafka.reader("status-partition-reader")
    await reader.start()
    placed: dict[str, int] = {}
    try:
        reader.assign([TopicPartition(topic, p) for p in partitions])
        await reader.seek_to_beginning()
        for _ in range(50):
            batch = await reader.getmany(timeout_ms=100)
            for tp, records in batch.items():
                placed.update({r.key.decode(): tp.partition for r in records if r.key})
            if set(consents) <= set(placed):
                break
    finally:
        await reader.stop()
    default = DefaultPartitioner()
    assert {c: placed.get(c) for c in consents} == {
        c: default(c.encode(), partitions, partitions) for c in consents
    }
