"""A Kafka scene for the operator commands' tests: the pipeline's topics on a broker, a
producer, and consumers committing offsets for any group, all closed afterwards."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from portability.broker import ensure_topics
from portability.settings import Settings
from portability.wire.topics import TopicNames, pipeline_topics

__all__ = ["PARTITIONS", "Scene", "joined_member"]

PARTITIONS = 2
# Joining a group on Tansu takes about 5 s.
JOIN_DEADLINE_S = 30.0


class Scene:
    """Drives offsets on the pipeline's topics: produce records, commit as a group would.

    Commits go through ``assign()`` consumers with a group id, which commit at once: no
    group join (several seconds on Tansu), and the group has no members.
    """

    def __init__(self, bootstrap: str, settings: Settings) -> None:
        self.bootstrap = bootstrap
        self.settings = settings
        self.names = TopicNames.with_prefix(settings.topic_prefix)
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10)
        self._committers: dict[str, AIOKafkaConsumer] = {}

    async def start(self) -> None:
        await ensure_topics(self.bootstrap, pipeline_topics(self.names, PARTITIONS))
        await self._producer.start()

    async def close(self) -> None:
        for consumer in self._committers.values():
            await consumer.stop()
        await self._producer.stop()

    async def produce(
        self, topic: str, partition: int, count: int, age_s: float | None = None
    ) -> list[int]:
        """``count`` records in one batch; ``age_s`` back-dates their timestamps."""
        stamp = None if age_s is None else int((time.time() - age_s) * 1000)
        futures = [
            await self._producer.send(topic, b"x", partition=partition, timestamp_ms=stamp)
            for _ in range(count)
        ]
        return [(await future).offset for future in futures]

    async def produce_keyed(
        self,
        topic: str,
        partition: int,
        key: bytes,
        headers: list[tuple[str, bytes]],
        count: int = 1,
    ) -> list[int]:
        """``count`` records with ``key`` and ``headers`` (as the worker parks them)."""
        futures = [
            await self._producer.send(topic, b"x", key=key, partition=partition, headers=headers)
            for _ in range(count)
        ]
        return [(await future).offset for future in futures]

    async def commit(self, group: str, offsets: dict[TopicPartition, int]) -> None:
        consumer = self._committers.get(group)
        if consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=group, enable_auto_commit=False
            )
            await consumer.start()
            self._committers[group] = consumer
        consumer.assign(list(offsets))
        await consumer.commit(offsets)


@contextlib.asynccontextmanager
async def joined_member(
    bootstrap: str, group: str, *topics: str
) -> AsyncIterator[AIOKafkaConsumer]:
    """A real member of ``group`` subscribed to ``topics``, once it holds partitions; it
    commits only what the test commits (it is the group's live member meanwhile)."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + JOIN_DEADLINE_S
        while not consumer.assignment():
            assert time.monotonic() < deadline, f"the consumer did not join {group}"
            await consumer.getmany(timeout_ms=100)
        yield consumer
    finally:
        await consumer.stop()


class SkippableClock:
    """The wall clock, plus whatever a test skips ahead (lag rules judge time)."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.time() + self.skipped
