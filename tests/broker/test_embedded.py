"""The embedded broker (Tansu) and topic creation, against real Tansu processes.

Every wait is a loop with a deadline; every topic name is unique to its test.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from portability.broker import BrokerError, EmbeddedBroker, ensure_topics, free_port
from portability.wire import TopicNames, TopicSpec, pipeline_topics

_DEADLINE_S = 30.0


def _unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:10]}"


async def _connects(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


@contextlib.asynccontextmanager
async def _admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def _partition_counts(bootstrap: str, topics: list[str]) -> dict[str, int]:
    async with _admin(bootstrap) as admin:
        described: list[dict[str, Any]] = await admin.describe_topics(topics)
    return {
        str(topic["topic"]): len(topic["partitions"])
        for topic in described
        if topic["error_code"] == 0
    }


async def _consume(
    bootstrap: str, partitions: list[TopicPartition], expected: int
) -> tuple[list[Any], dict[TopicPartition, int | None]]:
    """Read ``expected`` records from the start of ``partitions``, with the high watermark of
    each partition as the last fetch reported it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    records: list[Any] = []
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + _DEADLINE_S
        while len(records) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(*partitions, timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
        highwaters = {tp: consumer.highwater(tp) for tp in partitions}
    finally:
        await consumer.stop()
    return records, highwaters


# --- the embedded broker -------------------------------------------------------------------------


async def test_embedded_broker_round_trips_a_record(tmp_path: Path) -> None:
    log_file = tmp_path / "tansu.log"
    async with EmbeddedBroker(log_file=log_file) as broker:
        assert broker.port != 0
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        topic = _unique("roundtrip")
        assert await ensure_topics(broker.bootstrap, [TopicSpec(topic, 1, "delete")]) == [topic]

        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        try:
            sent = [
                await producer.send_and_wait(topic, value=f"v{i}".encode(), key=b"user-1")
                for i in range(3)
            ]
        finally:
            await producer.stop()
        assert [m.offset for m in sent] == [0, 1, 2]

        partition = TopicPartition(topic, 0)
        records, highwaters = await _consume(broker.bootstrap, [partition], expected=3)

        assert [(r.key, r.value) for r in records] == [
            (b"user-1", f"v{i}".encode()) for i in range(3)
        ]
        assert [r.offset for r in records] == [0, 1, 2]
        # The fetch response's high watermark is right on Tansu (its end_offsets is not).
        assert highwaters == {partition: 3}
    assert log_file.exists()


async def test_embedded_broker_on_a_chosen_free_port() -> None:
    port = free_port()
    async with EmbeddedBroker(port=port) as broker:
        assert broker.port == port
        assert await _connects("127.0.0.1", port)


async def test_stop_terminates_the_process() -> None:
    broker = EmbeddedBroker()
    await broker.start()
    process = broker._process
    assert isinstance(process, subprocess.Popen)
    assert process.poll() is None

    await broker.stop()

    assert process.poll() is not None, "the Tansu process is still running"
    # The process has exited, so the kernel has closed its listening socket.
    assert not await _connects(broker.host, broker.port), "the port still accepts connections"
    await broker.stop()  # stopping again is a no-op


async def test_stop_before_start_is_a_no_op() -> None:
    await EmbeddedBroker().stop()


async def test_start_on_the_port_of_a_running_broker_fails(broker: EmbeddedBroker) -> None:
    """Tansu itself would exit with code 0 (AddrInUse) while the readiness probe reached the
    running broker, so start() checks the port first and says what is wrong."""
    second = EmbeddedBroker(port=broker.port)

    with pytest.raises(BrokerError, match=rf"{broker.bootstrap}.*port is already in use"):
        await second.start()

    assert second._process is None, "no process was left behind"
    await second.stop()
    assert await _connects(broker.host, broker.port), "the running broker was disturbed"


async def test_start_on_a_port_held_by_another_program_fails() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]

        with pytest.raises(BrokerError, match="port is already in use"):
            await EmbeddedBroker(port=port).start()


# --- ensure_topics -------------------------------------------------------------------------------


async def test_ensure_topics_creates_topics_with_their_partition_counts(
    broker: EmbeddedBroker,
) -> None:
    specs = [
        TopicSpec(_unique("one"), 1, "delete"),
        TopicSpec(_unique("three"), 3, "compact"),
        TopicSpec(_unique("five"), 5, "delete", 60_000),
    ]

    created = await ensure_topics(broker.bootstrap, specs)

    assert created == [spec.name for spec in specs]
    counts = await _partition_counts(broker.bootstrap, created)
    assert counts == {spec.name: spec.partitions for spec in specs}

    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
    await consumer.start()
    try:
        assert {spec.name for spec in specs} <= await consumer.topics()  # fetches metadata
        for spec in specs:
            assert consumer.partitions_for_topic(spec.name) == set(range(spec.partitions))
    finally:
        await consumer.stop()


async def test_ensure_topics_creates_the_whole_pipeline_layout(broker: EmbeddedBroker) -> None:
    specs = pipeline_topics(TopicNames.with_prefix(_unique("t") + "."), partitions=4)

    created = await ensure_topics(broker.bootstrap, specs)

    assert sorted(created) == sorted(spec.name for spec in specs)
    counts = await _partition_counts(broker.bootstrap, created)
    assert counts == {spec.name: spec.partitions for spec in specs}


async def test_ensure_topics_is_idempotent(broker: EmbeddedBroker) -> None:
    first = TopicSpec(_unique("idem"), 3, "delete")
    assert await ensure_topics(broker.bootstrap, [first]) == [first.name]

    assert await ensure_topics(broker.bootstrap, [first]) == []
    assert await ensure_topics(broker.bootstrap, [first]) == []

    second = TopicSpec(_unique("idem-new"), 2, "compact")
    assert await ensure_topics(broker.bootstrap, [first, second]) == [second.name]
    counts = await _partition_counts(broker.bootstrap, [first.name, second.name])
    assert counts == {first.name: 3, second.name: 2}


async def test_ensure_topics_of_nothing_creates_nothing(broker: EmbeddedBroker) -> None:
    assert await ensure_topics(broker.bootstrap, []) == []


async def test_existing_topic_with_other_partition_count_is_an_error(
    broker: EmbeddedBroker,
) -> None:
    name = _unique("mismatch")
    async with _admin(broker.bootstrap) as admin:
        await admin.create_topics([NewTopic(name, 2, 1)])
    assert await _partition_counts(broker.bootstrap, [name]) == {name: 2}

    with pytest.raises(BrokerError, match=rf"topic {name} has 2 partitions.*configured for 3"):
        await ensure_topics(broker.bootstrap, [TopicSpec(name, 3, "delete")])

    # The topic was reported, not changed.
    assert await _partition_counts(broker.bootstrap, [name]) == {name: 2}


async def test_mismatch_is_reported_even_when_other_topics_are_new(
    broker: EmbeddedBroker,
) -> None:
    existing = TopicSpec(_unique("exists"), 1, "delete")
    await ensure_topics(broker.bootstrap, [existing])
    fresh = TopicSpec(_unique("fresh"), 2, "delete")

    with pytest.raises(BrokerError, match=rf"topic {existing.name} has 1 partitions"):
        await ensure_topics(broker.bootstrap, [fresh, TopicSpec(existing.name, 4, "delete")])


async def test_ensure_topics_on_an_unreachable_broker_is_a_broker_error() -> None:
    address = f"127.0.0.1:{free_port()}"

    with pytest.raises(BrokerError, match=f"cannot reach Kafka at {address}") as caught:
        await asyncio.wait_for(ensure_topics(address, []), _DEADLINE_S)
    assert caught.value.retriable
