"""Kafka clients built one way, from the settings."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from portability.settings import Settings

__all__ = ["KafkaClients", "stop_consumer"]

log = logging.getLogger(__name__)


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """``consumer.stop()``, without the CancelledError aiokafka lets out of it.

    With the broker gone mid-fetch, aiokafka's fetcher cancels its pending fetch requests on
    close and awaits them without catching their CancelledError (aiokafka 0.12-0.13): stop()
    then raises it in the caller's task, which ends that task as if it had been cancelled
    (the status page's lag sampler stopped for good that way in a broker outage). Raised on
    only when the caller's own task is being cancelled.
    """
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        log.debug("consumer stopped; aiokafka's cancelled fetch request ignored")


@dataclass(frozen=True, slots=True)
class KafkaClients:
    """Producers and consumers for one bootstrap address."""

    bootstrap: str
    settings: Settings

    def producer(self, client_id: str, linger_ms: int = 5) -> AIOKafkaProducer:
        # acks="all" so that "acknowledged" means durable on every in-sync replica; the
        # pipeline commits input offsets only after its output is acknowledged.
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=client_id,
            acks="all",
            linger_ms=linger_ms,
            max_batch_size=256 * 1024,
        )

    def group_consumer(self, group_id: str, client_id: str) -> AIOKafkaConsumer:
        """A consumer in ``group_id`` with manual commits; the caller subscribes.

        The range assignor gives one member the same partition numbers of every subscribed
        topic, which is what co-partitioned topics need.
        """
        s = self.settings
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=s.kafka_session_timeout_ms,
            heartbeat_interval_ms=s.kafka_heartbeat_interval_ms,
            rebalance_timeout_ms=s.kafka_rebalance_timeout_ms,
            max_poll_records=s.matcher_batch_max_records,
            fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    def reader(self, client_id: str) -> AIOKafkaConsumer:
        """A consumer outside any group, for reading partitions it assigns itself."""
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
        )
