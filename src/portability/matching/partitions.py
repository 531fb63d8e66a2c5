"""The partitions a matcher holds: set up on assignment, checkpointed, dropped on revocation.

A change may be matched only against the complete consents of its user's partition, with the
sequences (and audience figures) its partition's checkpoint left off at. So on assignment the
change partitions are paused, their consents re-read from the beginning and their checkpoints
restored, and each resumes only once its consents are read to the end; records fetched
meanwhile are dropped (:meth:`HeldPartitions.current`) and fetched again. The checkpoint of a
batch is written here too, beside the restore that reads it back.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from portability.broker import RebalanceListener
from portability.matching.audience import AudienceBook
from portability.matching.checkpoints import CheckpointStore
from portability.matching.consent_index import ConsentIndex
from portability.wire.topics import TopicNames

__all__ = ["HeldPartitions", "Records"]

log = logging.getLogger(__name__)

Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


class HeldPartitions:
    """The consent indexes and sequences of the partitions assigned to one matcher.

    Attributes:
        indexes: The consents of each held partition (of ``consents``).
        sequences: The last sequence of each consent, per held partition of
            ``account.changes``.
        loading: Partitions whose consents are still being read.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        topics: TopicNames,
        checkpoints: CheckpointStore,
        audience: AudienceBook,
        lock: asyncio.Lock,
        stopping: asyncio.Event,
    ) -> None:
        self._consumer = consumer
        self._producer = producer  # the matcher's: a checkpoint follows the batch's deltas
        self._topics = topics
        self._checkpoints = checkpoints
        self._audience = audience
        self._lock = lock  # the matcher's: a batch and a rebalance never interleave
        self._stopping = stopping
        self.indexes: dict[int, ConsentIndex] = {}
        self.sequences: dict[int, dict[str, int]] = {}
        self.recent: dict[int, RecentChanges] = {}  # per partition, see RecentChanges
        self.loading: set[int] = set()
        self._resume_at: dict[int, int | None] = {}  # where a loading partition resumes

    def listener(self) -> RebalanceListener:
        """The rebalance listener to subscribe with."""
        return RebalanceListener(on_revoked=self.on_revoked, on_assigned=self.on_assigned)

    def current(self, batch: Records) -> Records:
        """Drop records fetched before a rebalance moved or reset their partition.

        A change may be matched only against the complete consents of its partition: records
        of a partition still re-reading its consents are fetched again after it resumes.
        """
        assigned = self._consumer.assignment()
        return {
            tp: records
            for tp, records in batch.items()
            if tp in assigned
            and (tp.topic == self._topics.consents or tp.partition not in self.loading)
        }

    async def checkpoint(
        self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> asyncio.Future[object]:
        """Send the checkpoint of a batch of ``tp`` (of ``account.changes``): where it ends,
        the sequences, figures and ledger after it; resolves on the broker's acknowledgement."""
        sequences = self.sequences.setdefault(tp.partition, {})
        figures, ledger = self._audience.checkpoint(tp.partition)
        # The ledger goes with the same next_offset as the sequences: a batch matched again
        # after a crash starts from the ledger before it, and so sends the same entries.
        return await self._checkpoints.send(
            self._producer,
            tp.partition,
            records[-1].offset + 1,
            dict(sequences),
            figures,
            ledger,
        )

    async def resume_loaded(self) -> None:
        """Resume the changes of partitions whose consents are now read to the end."""
        for partition in list(self.loading):
            tp = TopicPartition(self._topics.consents, partition)
            highwater = self._consumer.highwater(tp)
            if highwater is None or await self._consumer.position(tp) < highwater:
                continue
            self.loading.discard(partition)
            changes = TopicPartition(self._topics.account_changes, partition)
            offset = self._resume_at.pop(partition, None)
            if offset is None:
                await self._consumer.seek_to_beginning(changes)
            else:
                self._consumer.seek(changes, offset)
            self._consumer.resume(changes)
            log.info(
                "matcher partition %d ready with %d consents",
                partition,
                len(self.indexes.get(partition, ())),
            )

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Re-read consents and load checkpoints of newly assigned partitions.

        aiokafka may fetch a new assignment before this listener returns, so the change
        partitions are paused and marked loading before the first ``await``; records fetched
        meanwhile are dropped by :meth:`current`, and each partition is positioned at its
        checkpoint (or committed offset) when it resumes.
        """
        changes = [tp for tp in assigned if tp.topic == self._topics.account_changes]
        consents = [tp for tp in assigned if tp.topic == self._topics.consents]
        self._consumer.pause(*changes)
        self.loading.update(tp.partition for tp in changes)
        for tp in consents:
            self.indexes[tp.partition] = ConsentIndex()
        log.info(
            "matcher assigned %s",
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)),
        )
        async with self._lock:
            if self._stopping.is_set():
                return  # the consumer is stopping and waits for this listener: nothing to load
            if consents:
                await self._consumer.seek_to_beginning(*consents)
            await self._restore(changes)

    async def _restore(self, changes: list[TopicPartition]) -> None:
        checkpoints = await self._checkpoints.load([tp.partition for tp in changes])
        for tp in changes:
            checkpoint = checkpoints.get(tp.partition)
            self._audience.restore(tp.partition, checkpoint)
            if checkpoint is None:
                self.sequences[tp.partition] = {}
                self._resume_at[tp.partition] = await self._consumer.committed(tp)
                continue
            self.sequences[tp.partition] = dict(checkpoint["sequences"])
            self._resume_at[tp.partition] = checkpoint["next_offset"]
            log.info(
                "matcher partition %d resumes at offset %d from its checkpoint",
                tp.partition,
                checkpoint["next_offset"],
            )

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info(
            "matcher revoked %s",
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(revoked)) or "nothing",
        )
        async with self._lock:
            for tp in revoked:
                self.indexes.pop(tp.partition, None)
                self.sequences.pop(tp.partition, None)
                self.recent.pop(tp.partition, None)
                self._audience.forget(tp.partition)
                self.loading.discard(tp.partition)
                self._resume_at.pop(tp.partition, None)


class RecentChanges:
    """The change ids of a partition's latest matched changes: a change the platform sent
    twice (its first acknowledgement lost, as the producer contract allows) is matched once.

    Without it the copy got the next sequence under the same delta id, and an app that
    deduplicates on delta ids, as the webhook contract says, saw that sequence missing. Held
    in memory, the last ``limit`` per partition: a copy sent minutes later, or across a
    matcher's restart, is not caught (a producer's retries come within seconds).
    """

    def __init__(self, limit: int = 20_000) -> None:
        self._seen: dict[str, None] = {}  # insertion order: the oldest first
        self._limit = limit

    def seen_before(self, change_id: str) -> bool:
        """Whether ``change_id`` came before; remembered (the oldest forgotten past the limit)."""
        if change_id in self._seen:
            return True
        self._seen[change_id] = None
        if len(self._seen) > self._limit:
            del self._seen[next(iter(self._seen))]
        return False
