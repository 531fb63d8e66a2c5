"""The partitions a current-state view holds: each one's file, restored, handed over, closed.

On assignment a partition's source is paused and its file (new or not) is brought up to the
changelog in the background (:func:`portability.transfers.changelog.restore_partition`), so
that a view restoring many partitions keeps applying batches to the others. Between batches,
under the view's lock, a finished restore is handed over: the file joins the held stores and
the source resumes where the file stands. On revocation (or stop) a restore in progress is
cancelled and the file closed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from portability.runtime import Runtime
from portability.transfers.changelog import ChangelogResetError, Restored, restore_partition
from portability.transfers.errors import StateGapError
from portability.transfers.state_stats import StateStats
from portability.transfers.store import PartitionStore, state_path

__all__ = ["ViewPartitions"]

log = logging.getLogger(__name__)


class ViewPartitions:
    """The held and restoring partitions of one view.

    Attributes:
        stores: The file of each held (restored) partition.
        restoring: The restore in progress of each partition not held yet.
        settle_at: The source offset each held partition is consistent from (see
            :class:`~portability.transfers.changelog.Restored`).
    """

    def __init__(
        self,
        runtime: Runtime,
        client_id: str,
        consumer: AIOKafkaConsumer,
        data_dir: Path,
        lock: asyncio.Lock,
        stopping: asyncio.Event,
        applied: asyncio.Condition,
        stats: StateStats,
    ) -> None:
        self._runtime = runtime
        self._client_id = client_id
        self._source = runtime.topics.account_changes
        self._changelog = runtime.topics.state_changelog
        self._consumer = consumer
        self._data_dir = data_dir
        self._lock = lock  # the view's: a batch, a hand-over and a rebalance never mix
        self._stopping = stopping
        self._applied = applied  # the view's: notified whenever a position moves
        self._stats = stats
        self.stores: dict[int, PartitionStore] = {}
        self.restoring: dict[int, asyncio.Task[tuple[PartitionStore, Restored]]] = {}
        self.settle_at: dict[int, int] = {}

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Pause the new partitions and restore each in the background.

        Paused before the first ``await``: aiokafka may already be fetching them, and nothing
        may be applied to a partition until its file is restored.
        """
        self._consumer.pause(*assigned)
        if self._stopping.is_set():
            return  # the consumer is stopping and waits for this listener: restore nothing
        for tp in sorted(assigned):
            if tp.partition in self.stores or tp.partition in self.restoring:
                continue
            self.restoring[tp.partition] = asyncio.create_task(
                self._restore(tp.partition), name=f"state-restore-{tp.partition}"
            )
        log.info(
            "state view assigned %s",
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)) or "nothing",
        )

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        log.info(
            "state view revoked %s",
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(revoked)) or "nothing",
        )
        async with self._lock:
            await self.cancel_restores([tp.partition for tp in revoked])
            for tp in revoked:
                store = self.stores.pop(tp.partition, None)
                self.settle_at.pop(tp.partition, None)
                if store is not None:
                    await asyncio.to_thread(store.close)

    async def _restore(self, partition: int) -> tuple[PartitionStore, Restored]:
        """Open the partition's file and bring it up to its changelog (in the background)."""
        path = state_path(self._data_dir, self._source, partition)
        changelog = TopicPartition(self._changelog, partition)
        reader = self._runtime.kafka.reader(f"{self._client_id}-restore-{partition}")
        await reader.start()
        store = await asyncio.to_thread(PartitionStore.open, path, self._source, partition)
        try:
            try:
                restored = await restore_partition(reader, changelog, store)
            except ChangelogResetError as error:
                log.warning(
                    "state file %s does not match %s (%s); rebuilding it from the changelog",
                    path,
                    self._changelog,
                    error,
                    extra={"partition": partition},
                )
                await asyncio.to_thread(store.close)
                await asyncio.to_thread(PartitionStore.discard, path)
                store = await asyncio.to_thread(PartitionStore.open, path, self._source, partition)
                restored = await restore_partition(reader, changelog, store)
            await self._check_retained(reader, partition, restored.next_offset)
        except BaseException:
            await asyncio.to_thread(store.close)
            raise
        finally:
            await reader.stop()
        return store, restored

    async def _check_retained(self, reader: AIOKafkaConsumer, partition: int, offset: int) -> None:
        """Refuse to resume where retention already deleted changes the view never applied."""
        source = TopicPartition(self._source, partition)
        log_start = (await reader.beginning_offsets([source]))[source]
        if offset < log_start:
            raise StateGapError(self._source, partition, offset, log_start)

    async def hand_over_restored(self) -> None:
        """Resume the source of each partition whose restore finished, at its position."""
        for partition, task in list(self.restoring.items()):
            if not task.done():
                continue
            del self.restoring[partition]
            store, restored = task.result()  # a failed restore stops the view: run() raises
            self.stores[partition] = store
            self.settle_at[partition] = restored.settle_at
            source = TopicPartition(self._source, partition)
            self._consumer.seek(source, restored.next_offset)
            self._consumer.resume(source)
            self._stats.restores += 1
            self._stats.changelog_records_read += restored.records_read
            log.info(
                "state partition %d restored: %d changelog records read, resuming %s at %d",
                partition,
                restored.records_read,
                self._source,
                restored.next_offset,
                extra={"partition": partition, "offset": restored.next_offset},
            )
        async with self._applied:
            self._applied.notify_all()

    async def cancel_restores(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            task = self.restoring.pop(partition, None)
            if task is None:
                continue
            task.cancel()
            await asyncio.wait([task])  # unlike awaiting it, never raises the task's outcome
            if not task.cancelled() and task.exception() is None:
                store, _ = task.result()  # it finished before the cancel landed
                await asyncio.to_thread(store.close)
