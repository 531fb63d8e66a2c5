"""The current-state view: every user's current records per category, kept from
``account.changes`` (an upsert replaces the record, a delete removes it).

Each instance consumes its partitions of ``account.changes`` in the consumer group
``PORTABILITY_STATE_GROUP`` (or partitions it is given, outside any group) and keeps each in a
SQLite file under ``data_dir/state/`` (:mod:`portability.transfers.store`). For every batch it

1. writes the batch's changes and a checkpoint of the new source position to
   ``state.changelog`` (same partition number) and waits for the broker's acknowledgement,
2. applies the changes and the position to the partition's file in one transaction,
3. commits the group offset (for lag monitoring; the view itself resumes from its file).

Changes that are no user's record are left out: the matcher's audience updates (empty user id)
and what the privacy rules say is not an event (a share made off the platform). A record's
platform context is kept beside it, never shipped, for the privacy rules of snapshots and
archives.

Writing the changelog first keeps it at or ahead of every file: a crash between 1 and 2 leaves
the file behind, and it catches up from the changelog. When a partition is assigned, the file
(new or not) first reads the changelog from where it was last confirmed to the end
(:func:`portability.transfers.changelog.restore_partition`): nothing for a file that was
up to date, one batch after a crash, everything for an instance that never held the
partition. It then resumes the source at the restored position. The source is paused meanwhile,
so a partition's state is only ever served at a position it is consistent with.
That restore and hand-over is :mod:`portability.transfers.view_partitions`; this module
applies batches and serves reads.

Reads: :meth:`StateView.snapshot` gives a user's records with the position they are as of, in
one read transaction; :meth:`StateView.wait_applied` waits until a partition has applied the
source up to an offset ("as of at least X").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from portability.broker import RebalanceListener, stop_consumer
from portability.privacy.engine import is_tracked
from portability.runtime import Runtime
from portability.transfers.changelog import encode_change, encode_checkpoint
from portability.transfers.errors import PartitionNotHeldError, StateNotReadyError
from portability.transfers.intake import ViewIntake
from portability.transfers.render import state_change
from portability.transfers.source_end import SourceEnd
from portability.transfers.state_stats import StateStats
from portability.transfers.store import Position, Snapshot, StateChange
from portability.transfers.view_partitions import ViewPartitions
from portability.wire.records import AccountChange, Category
from portability.wire.topics import partition_for_user

__all__ = ["StateView"]

log = logging.getLogger(__name__)

Records = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One partition's share of a batch, decoded, ready to write."""

    partition: int
    changes: list[StateChange]
    next_offset: int


class StateView:
    """One instance of the view; ``start``, then ``run`` until ``stop``.

    Args:
        partitions: Hold exactly these partitions, outside any consumer group (a single
            instance, or tests). None (the default): join ``settings.state_group`` and hold
            what the group assigns.
        data_dir: Where ``state/`` is; ``settings.data_dir`` by default.
    """

    def __init__(
        self,
        runtime: Runtime,
        client_id: str = "portability-state",
        partitions: Sequence[int] | None = None,
        data_dir: Path | None = None,
    ) -> None:
        settings = runtime.settings
        self._runtime = runtime
        self._client_id = client_id
        self._source = runtime.topics.account_changes
        self._changelog = runtime.topics.state_changelog
        self._partitions = settings.partitions
        self._data_dir = data_dir or settings.data_dir
        self._static = None if partitions is None else sorted(set(partitions))
        self._consumer: AIOKafkaConsumer = (
            runtime.kafka.group_consumer(settings.state_group, client_id)
            if partitions is None
            else runtime.kafka.reader(client_id)
        )
        self._producer: AIOKafkaProducer = runtime.kafka.producer(client_id)
        # Batches as large as the matcher's: one changelog write and one transaction each.
        self._batch_max_records = settings.matcher_batch_max_records
        self._lock = asyncio.Lock()  # a batch, a restore's hand-over and a rebalance never mix
        self._applied = asyncio.Condition()  # notified whenever a position moves
        self._stopping = asyncio.Event()
        self._halted: BaseException | None = None  # why run() ended, if it failed
        self._end = SourceEnd(runtime, client_id, self._source)
        self.stats = StateStats()
        self._held = ViewPartitions(
            runtime,
            client_id,
            self._consumer,
            self._data_dir,
            self._lock,
            self._stopping,
            self._applied,
            self.stats,
        )
        # The held partitions' dicts themselves (never replaced): read on every batch and ask.
        self._stores = self._held.stores
        self._restoring = self._held.restoring
        self._settle_at = self._held.settle_at
        self.intake = ViewIntake(runtime, self._producer)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self._producer.start()
        await self._consumer.start()
        if self._static is None:
            listener = RebalanceListener(
                on_revoked=self._held.on_revoked, on_assigned=self._held.on_assigned
            )
            self._consumer.subscribe([self._source], listener=listener)
            return
        assigned = {TopicPartition(self._source, p) for p in self._static}
        self._consumer.assign(list(assigned))
        await self._held.on_assigned(assigned)

    async def run(self) -> None:
        """Apply batches until :meth:`stop`; raises if a partition cannot be restored."""
        try:
            while not self._stopping.is_set():
                batch = await self._consumer.getmany(
                    timeout_ms=200, max_records=self._batch_max_records
                )
                async with self._lock:
                    if self._stopping.is_set():
                        return
                    await self._held.hand_over_restored()
                    await self.process(batch)
        except BaseException as error:
            self._halted = error  # waiters give up at once instead of at their timeout
            async with self._applied:
                self._applied.notify_all()
            raise

    async def stop(self) -> None:
        self._stopping.set()
        async with self._lock:
            await self._held.cancel_restores(list(self._restoring))
        # Not under the lock: stopping the consumer waits for a rebalance in progress, whose
        # revocation listener takes the lock (held here, that hung the process for good).
        await stop_consumer(self._consumer)  # a broker gone mid-fetch must not abort the stop
        async with self._lock:
            await self._held.cancel_restores(list(self._restoring))  # begun by that rebalance
            await self._producer.stop()
            for partition in list(self._stores):
                await asyncio.to_thread(self._stores.pop(partition).close)
        await self._end.stop()
        async with self._applied:
            self._applied.notify_all()

    # -- state of the instance ---------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once partitions are held, restored, and consistent (see ``settle_at``)."""
        return (
            bool(self._stores)
            and not self._restoring
            and all(self._settled(p) for p in self._stores)
        )

    @property
    def caught_up(self) -> bool:
        """Ready, and every held partition applied up to the end its last fetch saw."""
        if not self.ready:
            return False
        for partition, store in self._stores.items():
            highwater = self._consumer.highwater(TopicPartition(self._source, partition))
            if highwater is None or store.next_offset < highwater:
                return False
        return True

    @property
    def held_partitions(self) -> list[int]:
        """Partitions whose state is restored here (whether or not yet settled)."""
        return sorted(self._stores)

    def partition_of(self, user_id: str) -> int:
        return partition_for_user(user_id, self._partitions)

    async def source_end(self, partition: int, timeout_s: float = 10.0) -> int:
        """The end of ``account.changes[partition]`` now: the offset its next change will get.

        Waiting with :meth:`wait_applied` until the view reaches it gives a state that holds
        every change published before this call (:meth:`SourceEnd.of` says how it is found).

        Raises:
            TimeoutError: The broker did not answer within ``timeout_s``.
        """
        return await self._end.of(partition, timeout_s)

    def position(self, partition: int) -> Position | None:
        """Where ``partition``'s state stands; None unless it is held here and consistent."""
        store = self._stores.get(partition)
        if store is None or not self._settled(partition):
            return None
        return store.position()

    def snapshot(self, user_id: str, categories: Iterable[Category | str]) -> Snapshot:
        """The user's current records of ``categories`` and the position they are as of.

        The returned :class:`Snapshot` holds a read transaction: iterate it (it streams), then
        close it (it is a context manager). It is safe to read in another thread.

        Raises:
            PartitionNotHeldError: Another instance holds the user's partition.
            StateNotReadyError: The partition is held but not consistent yet (restoring).
        """
        partition = self.partition_of(user_id)
        store = self._stores.get(partition)
        if store is None:
            if partition in self._restoring:
                raise StateNotReadyError(partition, "restoring from state.changelog")
            raise PartitionNotHeldError(partition)
        if not self._settled(partition):
            raise StateNotReadyError(
                partition,
                f"re-applying {self._source} up to offset {self._settle_at[partition]} "
                f"(now at {store.next_offset})",
            )
        return Snapshot(store.path, user_id, list(categories))

    async def wait_applied(self, partition: int, offset: int, timeout_s: float) -> Position:
        """Wait until ``partition`` has applied every change before ``offset``.

        Returns:
            The partition's position then (at ``offset`` or later).

        Raises:
            TimeoutError: Not reached within ``timeout_s``; the message says where it stands.
            StateNotReadyError: The view stopped, or failed, meanwhile.
        """

        def settled() -> bool:
            position = self.position(partition)
            reached = position is not None and position.offset >= offset
            return reached or self._stopping.is_set() or self._halted is not None

        async with self._applied:
            try:
                await asyncio.wait_for(self._applied.wait_for(settled), timeout_s)
            except TimeoutError:
                raise TimeoutError(self._not_reached(partition, offset, timeout_s)) from None
        position = self.position(partition)
        if position is None or position.offset < offset:
            why = (
                "the view stopped" if self._halted is None else f"the view failed: {self._halted!r}"
            )
            raise StateNotReadyError(partition, why)
        return position

    def _not_reached(self, partition: int, offset: int, timeout_s: float) -> str:
        store = self._stores.get(partition)
        where = "is not held here" if store is None else f"is at offset {store.next_offset}"
        return (
            f"{self._source}[{partition}] not applied up to offset {offset} within "
            f"{timeout_s:g} s: the partition {where}"
        )

    def _settled(self, partition: int) -> bool:
        store = self._stores[partition]
        return store.next_offset >= self._settle_at.get(partition, 0)

    # -- applying batches --------------------------------------------------------------------

    async def process(self, batch: Records) -> None:
        """Apply one batch: changelog first, then the files, then the group offsets."""
        work = self._current(batch)
        if not work:
            return
        started = time.perf_counter()
        self.intake.begin_batch()
        prepared = [await self._prepare(partition, records) for partition, records in work.items()]
        checkpoints = [await self._write_changelog(part) for part in prepared]
        await asyncio.gather(*self.intake.take_letters())
        await asyncio.gather(*(ack for acks in checkpoints for ack in acks))
        for part, acks in zip(prepared, checkpoints, strict=True):
            # The checkpoint is the last record sent to its partition: its offset tells where
            # this file's state is confirmed in the changelog.
            checkpoint_offset: int = acks[-1].result().offset
            store = self._stores[part.partition]
            await asyncio.to_thread(
                store.apply, part.changes, part.next_offset, checkpoint_offset + 1
            )
            self.stats.changes_applied += len(part.changes)
        await self._commit(
            {TopicPartition(self._source, p.partition): p.next_offset for p in prepared}
        )
        self.stats.batches += 1
        self.stats.last_batch_seconds = time.perf_counter() - started
        async with self._applied:
            self._applied.notify_all()

    def _current(self, batch: Records) -> dict[int, list[ConsumerRecord[bytes, bytes]]]:
        """The records of held partitions not applied yet.

        Records of a partition still restoring were fetched before it was paused; they are
        fetched again from the restored position. Offsets below the file's position were
        applied already (a fetch that raced a seek).
        """
        assigned = self._consumer.assignment()
        work: dict[int, list[ConsumerRecord[bytes, bytes]]] = {}
        for tp, records in batch.items():
            store = self._stores.get(tp.partition)
            if store is None or tp not in assigned:
                continue
            fresh = [record for record in records if record.offset >= store.next_offset]
            if fresh:
                work[tp.partition] = fresh
        return work

    async def _prepare(
        self, partition: int, records: list[ConsumerRecord[bytes, bytes]]
    ) -> _Prepared:
        latest: dict[tuple[str, str, str], StateChange] = {}
        for record in records:
            change = await self.intake.take(record)
            if change is None:
                continue  # dead-lettered (a replay re-publishes it), or no user's record
            if not _is_account_data(change):
                self.stats.changes_ignored += 1
                continue
            applied = state_change(change, record.offset)
            latest[applied.key] = applied  # within a batch, only a record's last change counts
        self.stats.source_records_read += len(records)
        return _Prepared(partition, list(latest.values()), records[-1].offset + 1)

    async def _write_changelog(self, part: _Prepared) -> list[asyncio.Future[Any]]:
        """Send the batch's changes and its checkpoint; the checkpoint's ack comes last."""
        acks: list[asyncio.Future[Any]] = []
        for change in part.changes:
            key, value, headers = encode_change(change)
            acks.append(
                await self._producer.send(
                    self._changelog, value, key=key, partition=part.partition, headers=headers
                )
            )
        position = Position(self._source, part.partition, part.next_offset)
        key, value = encode_checkpoint(position)
        acks.append(
            await self._producer.send(self._changelog, value, key=key, partition=part.partition)
        )
        self.stats.changelog_records_written += len(acks)
        return acks

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if self._static is not None:
            return  # outside a group there is nothing to commit; the files hold the position
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            # The partition moved mid-batch; its new owner restores from the changelog.
            log.warning("state view commit skipped after a rebalance: %s", error)


def _is_account_data(change: AccountChange) -> bool:
    """False for a change that is not a user's record: the matcher's audience updates (counts
    for other users' posts, handled by the matcher) and what the privacy rules say is not an
    event at all (a share made off the platform)."""
    return change.get("audience") is None and is_tracked(change)
