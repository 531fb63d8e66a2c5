"""A Kafka scene for the operator commands' tests: the pipeline's topics on a broker, a
producer, and consumers committing offsets for any group, all closed afterwards."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from portability.broker import ensure_topics
from portability.settings import Settings
from portability.wire.topics import TopicNames, pipeline_topics

__all__ = ["PARTITIONS", "Scene"]

PARTITIONS = 2


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
