"""Reading a poll-mode app's feed on the real broker: pages, long polls, other apps, iterators.

Events are appended as the worker appends them (:class:`FeedWriter`). The embedded broker
cannot delete records (no DeleteRecords), so a partition whose start moved is simulated with
a consumer whose ``beginning_offsets`` answers a start the test chooses.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from portability.delivery.feed import FeedWriter
from portability.messages.feed_iterators import (
    FeedIterator,
    FeedUnavailableError,
    InvalidIteratorError,
    IteratorExpiredError,
)
from portability.messages.feed_reader import FeedPage, FeedReader
from portability.runtime import Runtime
from portability.wire.records import AppRecord
from portability.wire.topics import partition_for_app

APP = "app_reader"


def neighbour(app_id: str, partitions: int) -> str:
    """Another app whose events share ``app_id``'s feed partition."""
    wanted = partition_for_app(app_id, partitions)
    return next(
        f"app_n{n}" for n in range(1000) if partition_for_app(f"app_n{n}", partitions) == wanted
    )


def record(app_id: str) -> AppRecord:
    return {
        "app_id": app_id,
        "name": app_id,
        "webhook_url": "",
        "signing_secrets": [],
        "enabled": True,
        "version": 1,
        "delivery_mode": "poll",
    }


def body(app_id: str, n: int) -> bytes:
    data = {"consent_id": f"cns_{app_id}", "app_id": app_id, "n": n}
    return orjson.dumps({"type": "portability.delta", "data": data})


class Feed:
    """Appends events as the worker does and reads them as the API does."""

    def __init__(self, runtime: Runtime, producer: AIOKafkaProducer, reader: FeedReader) -> None:
        self.runtime = runtime
        self.writer = FeedWriter(producer, runtime.topics.feed, runtime.settings.partitions)
        self.reader = reader

    async def append(self, app_id: str, numbers: Sequence[int]) -> None:
        for n in numbers:
            outcome = await self.writer.append(record(app_id), f"msg_{app_id}_{n}", body(app_id, n))
            assert outcome.ok, outcome

    async def read(self, iterator: str | None = None, **options: float | str) -> FeedPage:
        return await self.reader.read(APP, iterator, **options)  # type: ignore[arg-type]


def numbers(page: FeedPage) -> list[int]:
    return [orjson.loads(event.body)["data"]["n"] for event in page.events]


@pytest.fixture
async def producer(runtime: Runtime) -> AsyncIterator[AIOKafkaProducer]:
    started = runtime.kafka.producer("feed-reader-tests", linger_ms=0)
    await started.start()
    yield started
    await started.stop()


@pytest.fixture
async def feed(runtime: Runtime, producer: AIOKafkaProducer) -> AsyncIterator[Feed]:
    reader = FeedReader(runtime)
    yield Feed(runtime, producer, reader)
    await reader.stop()


async def test_pages_follow_the_iterator_in_order_without_other_apps_events(feed: Feed) -> None:
    other = neighbour(APP, feed.runtime.settings.partitions)
    await feed.append(APP, [1, 2])
    await feed.append(other, [100])
    await feed.append(APP, [3])
    await feed.append(other, [101, 102])
    await feed.append(APP, [4, 5])

    first = await feed.read(limit=2, wait_s=0)
    second = await feed.read(first.iterator, limit=2, wait_s=0)
    third = await feed.read(second.iterator, limit=2, wait_s=0)

    assert [numbers(first), numbers(second), numbers(third)] == [[1, 2], [3, 4], [5]]
    assert [first.more, second.more, third.more] == [True, True, False]
    event = first.events[0]
    assert (event.webhook_id, event.event_type, event.consent_id) == (
        f"msg_{APP}_1",
        "portability.delta",
        f"cns_{APP}",
    )
    assert event.body == body(APP, 1)  # byte for byte
    # The neighbour reads its own, and none of these.
    theirs = await feed.reader.read(other, None, wait_s=0)
    assert {orjson.loads(e.body)["data"]["app_id"] for e in theirs.events} == {other}


async def test_an_empty_answer_keeps_the_iterator_usable(feed: Feed) -> None:
    await feed.append(APP, [1])
    page = await feed.read(wait_s=0)

    started = time.monotonic()
    empty = await feed.read(page.iterator, wait_s=0)
    assert time.monotonic() - started < 5
    assert (empty.events, empty.more) == ([], False)

    await feed.append(APP, [2])
    assert numbers(await feed.read(empty.iterator, wait_s=0)) == [2]


async def test_a_long_poll_answers_as_soon_as_an_event_arrives(feed: Feed) -> None:
    await feed.append(APP, [1])
    caught_up = await feed.read(wait_s=0)

    started = time.monotonic()
    waiting = asyncio.create_task(feed.read(caught_up.iterator, wait_s=15))
    await feed.append(APP, [2])
    page = await asyncio.wait_for(waiting, 15)

    assert numbers(page) == [2]
    assert time.monotonic() - started < 5  # well before the 15 s wait ran out


async def test_a_long_poll_with_nothing_new_waits_then_answers_empty(feed: Feed) -> None:
    started = time.monotonic()
    page = await feed.read(wait_s=1)

    assert time.monotonic() - started >= 0.9
    assert page.events == []


async def test_from_latest_skips_what_is_there_and_waits_for_what_comes(feed: Feed) -> None:
    await feed.append(APP, [1, 2])

    latest = await feed.read(start="latest", wait_s=0)
    await feed.append(APP, [3])

    assert latest.events == []
    assert numbers(await feed.read(latest.iterator, wait_s=0)) == [3]


async def test_iterators_of_another_app_or_made_up_are_refused(feed: Feed) -> None:
    other = neighbour(APP, feed.runtime.settings.partitions)
    await feed.append(other, [1])
    theirs = await feed.reader.read(other, None, wait_s=0)

    with pytest.raises(InvalidIteratorError, match="another app"):
        await feed.read(theirs.iterator, wait_s=0)
    with pytest.raises(InvalidIteratorError):
        await feed.read("fi1.bm9wZQ", wait_s=0)


async def test_an_iterator_past_the_end_is_expired(feed: Feed) -> None:
    await feed.append(APP, [1])
    partition = partition_for_app(APP, feed.runtime.settings.partitions)
    beyond = FeedIterator(APP, partition, 10_000).encode()

    with pytest.raises(IteratorExpiredError, match="recreated"):
        await feed.read(beyond, wait_s=0)


def moved_start(runtime: Runtime, start: int) -> Callable[[], AIOKafkaConsumer]:
    """Consumers that see every feed partition begin at ``start`` (retention moved on)."""

    def make() -> AIOKafkaConsumer:
        consumer = runtime.kafka.reader("feed-reader-tests")
        real = consumer.beginning_offsets

        async def beginning(partitions: Sequence[TopicPartition]) -> Mapping[TopicPartition, int]:
            answer = await real(partitions)
            return {tp: max(start, offset) for tp, offset in answer.items()}

        consumer.beginning_offsets = beginning
        return consumer

    return make


async def test_an_iterator_below_the_partitions_start_is_expired(
    runtime: Runtime, feed: Feed
) -> None:
    await feed.append(APP, [1, 2, 3])
    old = await feed.read(limit=1, wait_s=0)  # an iterator at offset 1
    moved = FeedReader(runtime, consumer=moved_start(runtime, 2))
    try:
        with pytest.raises(IteratorExpiredError, match="keeps events from offset 2 on"):
            await moved.read(APP, old.iterator, wait_s=0)
        # Without an iterator the app starts again at the oldest event kept.
        assert numbers(await moved.read(APP, None, wait_s=0)) == [3]
    finally:
        await moved.stop()


async def test_reads_beyond_the_open_bound_are_refused_and_consumers_are_reused(
    runtime: Runtime, feed: Feed
) -> None:
    single = FeedReader(runtime, max_open=1)
    try:
        waiting = asyncio.create_task(single.read(APP, None, wait_s=3))
        await asyncio.sleep(0)  # the first read takes the one consumer
        with pytest.raises(FeedUnavailableError, match="try again shortly") as raised:
            await single.read(APP, None, wait_s=0)
        assert raised.value.retriable
        await feed.append(APP, [1])
        assert numbers(await waiting) == [1]
        # The consumer went back to the pool: reads one after another keep working.
        for _ in range(3):
            assert numbers(await single.read(APP, None, wait_s=0)) == [1]
    finally:
        await single.stop()


async def test_without_kafka_the_feed_is_unavailable() -> None:
    with pytest.raises(FeedUnavailableError, match="Kafka"):
        await FeedReader(None).read(APP)
