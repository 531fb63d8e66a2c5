"""Partition handling: assignment, revocation and commits of the delivery worker's partitions.

``deliveries``, ``notifications`` and ``deliveries.retry`` are partitioned alike (by consent),
so a partition number is a set of consents. On assignment the retry partition is read to its
end before the deliveries and notifications of the same number are resumed, so a parked
consent's lane is rebuilt, in sequence, before anything newer of it is delivered. On
revocation the lanes of the partition stop and what they finished is committed; their new
owner delivers the rest. An offset is committed only when everything before it is done
(delivered, dropped, dead-lettered, or durably parked): see
:class:`~portability.delivery.offsets.OffsetTracker`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from portability.delivery.delivery_log import DeliveryLog
from portability.delivery.lane_book import LaneBook
from portability.delivery.lanes import Lane
from portability.delivery.ledger_book import LedgerBook
from portability.delivery.status import StatusBoard
from portability.wire.topics import TopicNames

__all__ = ["Partitions"]

# The role's logger, whichever part of the worker writes: operators filter its lines by one name.
log = logging.getLogger("portability.delivery.worker")

_COMMIT_INTERVAL_S = 0.1
_STATUS_EVERY = 10  # status is informational: flushed every tenth commit round (1 s)


class Partitions:
    """The worker's partitions: which are loading their parked records, and their commits."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        topics: TopicNames,
        book: LaneBook,
        status: StatusBoard,
        ledgers: LedgerBook,
        delivery_log: DeliveryLog,
    ) -> None:
        self._ledgers = ledgers
        self._log = delivery_log
        self._consumer = consumer
        self._producer = producer
        self._topics = topics
        self._book = book
        self._loading = book.loading
        self._status = status
        self._sources = (topics.deliveries, topics.notifications)

    def is_loading(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` holds deliveries or notifications waiting for parked records."""
        return tp.topic in self._sources and tp.partition in self._loading

    async def resume_loaded(self) -> None:
        """Resume the deliveries of partitions whose retry records are read to the end."""
        for partition in list(self._loading):
            if not await self._read_to_end(self._topics.deliveries_retry, partition):
                continue
            ledger = TopicPartition(self._topics.delivery_ledger, partition)
            if not await self._read_to_end(ledger.topic, partition):
                continue
            # From now on the partition's heads are this worker's own: not read back (one
            # record per consent delivered to per commit round). A new assignment resumes it.
            self._consumer.pause(ledger)
            self._loading.discard(partition)
            for topic in (self._topics.deliveries, self._topics.notifications):
                tp = TopicPartition(topic, partition)
                committed = await self._consumer.committed(tp)
                # Nothing committed: from offset 0, which the consumer's reset policy (earliest)
                # moves to the log's start if retention removed it. Not seek_to_beginning(),
                # whose offset lookup was seen never to return for an empty partition here.
                self._consumer.seek(tp, 0 if committed is None else committed)
                self._consumer.resume(tp)
            log.info("delivery partition %d ready after its parked records", partition)

    async def _read_to_end(self, topic: str, partition: int) -> bool:
        tp = TopicPartition(topic, partition)
        highwater = self._consumer.highwater(tp)
        return highwater is not None and await self._consumer.position(tp) >= highwater

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        """Hold new partitions' deliveries until their parked records are back in the lanes.

        Paused before the first ``await``: aiokafka may fetch before this listener returns,
        and what it fetched is dropped by the reader and read again on resume.
        """
        sources = [tp for tp in assigned if tp.topic in self._sources]
        self._consumer.pause(*sources)
        self._loading.update(
            tp.partition for tp in assigned if tp.topic == self._topics.deliveries_retry
        )
        for tp in assigned:
            if tp.topic == self._topics.delivery_ledger:
                # Every head of the partition, from the start: the chains to continue.
                self._consumer.seek(tp, 0)
        for tp in sources:
            if tp.partition not in self._loading:
                self._consumer.resume(tp)  # no retry partition of that number here

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        """Stop the lanes of revoked partitions; their new owner delivers what was not done."""
        numbers = {tp.partition for tp in revoked}
        lanes = [lane for lane in self._book.lanes.values() if lane.partition in numbers]
        await cancel(lanes)
        await self.commit(revoked)  # with the log and the heads the next owner continues from
        self._ledgers.forget(numbers)
        self._book.forget(revoked, lanes)

    async def commit_loop(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(_COMMIT_INTERVAL_S)
            await self.commit()
            rounds += 1
            if rounds % _STATUS_EVERY == 0:
                await self._status.flush(self._producer)

    async def commit(self, only: Iterable[TopicPartition] | None = None) -> None:
        """Commit what finished, once its message log entries and ledger heads are produced.

        In that order, each taken before the next is produced: an offset committed says its
        records' attempts are in the log (a crash loses no entry of a message it will not
        send again), and a ledger head says no more than the log does.
        """
        wanted = None if only is None else set(only)
        offsets = {}
        for tp, tracker in self._book.trackers.items():
            if wanted is not None and tp not in wanted:
                continue
            committable = tracker.take_committable()
            if committable is not None:
                offsets[tp] = committable
        heads = self._ledgers.take()
        try:
            await self._log.flush()
            await self._ledgers.record(heads)
        except KafkaError as error:
            self._ledgers.give_back(heads)
            self._give_back(offsets)
            log.warning(
                "delivery commit held: the message log or the ledger heads could not be "
                "produced (retried): %s",
                error,
            )
            return
        except BaseException:
            # Cancelled (the worker stops, or the loop is cancelled by a rebalance): what was
            # taken goes to the next commit, the stop's own last one included.
            self._ledgers.give_back(heads)
            self._give_back(offsets)
            raise
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            log.warning("delivery commit skipped after a rebalance: %s", error)
        except BaseException:
            self._give_back(offsets)  # committed again by the next commit (the same offsets)
            raise

    def _give_back(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            tracker = self._book.trackers.get(tp)
            if tracker is not None:
                tracker.give_back(offset)


async def cancel(lanes: list[Lane]) -> None:
    """Stop the lanes' tasks and wait for them to end."""
    tasks = [lane.task for lane in lanes if lane.task is not None]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
