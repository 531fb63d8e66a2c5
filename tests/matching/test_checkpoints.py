"""A partition's latest checkpoint is read from near its end, not its whole history.

A checkpoint is written per batch and brokers compact late (the embedded one never), so a
partition's history grows with the matcher's hours; reading it whole on every assignment
made rebalances slower and slower, and on a slow broker longer than the group's rebalance
timeout (found by the chaos suite). What must hold: the latest decodable checkpoint wins, an
unreadable tail falls back to the earlier ones, a partition without one has none.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from portability.matching.checkpoints import CheckpointStore
from portability.runtime import Runtime


@pytest.fixture
async def store(runtime: Runtime) -> AsyncIterator[CheckpointStore]:
    checkpoints = CheckpointStore(
        runtime.topics.matcher_checkpoints,
        runtime.codec,
        runtime.kafka.reader("test-checkpoints"),
    )
    await checkpoints.start()
    yield checkpoints
    await checkpoints.stop()


@pytest.fixture
async def producer(runtime: Runtime) -> AsyncIterator[AIOKafkaProducer]:
    sending = runtime.kafka.producer("test-checkpoints")
    await sending.start()
    yield sending
    await sending.stop()


async def test_the_latest_of_many_checkpoints_is_loaded(
    store: CheckpointStore, producer: AIOKafkaProducer
) -> None:
    for offset in range(1, 61):
        ack = await store.send(producer, 0, offset, {"cns_1": offset})
        await ack
    await (await store.send(producer, 1, 7, {"cns_2": 3}))

    latest = await store.load([0, 1, 2])

    assert latest[0]["next_offset"] == 60
    assert latest[0]["sequences"] == {"cns_1": 60}
    assert latest[1]["next_offset"] == 7
    assert 2 not in latest


async def test_an_unreadable_tail_falls_back_to_the_last_readable_checkpoint(
    runtime: Runtime, store: CheckpointStore, producer: AIOKafkaProducer
) -> None:
    for offset in range(1, 11):
        await (await store.send(producer, 0, offset, {"cns_1": offset}))
    topic = runtime.topics.matcher_checkpoints
    for _ in range(40):  # more than the tail read first: none of them decodes
        await producer.send_and_wait(topic, b"not a checkpoint", key=b"0", partition=0)

    latest = await store.load([0])

    assert latest[0]["next_offset"] == 10
