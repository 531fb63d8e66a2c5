"""The delivery worker: deltas from ``deliveries`` to each app's webhook, in order per consent.

Each consent has a lane: its deltas wait there in sequence, and one task at a time posts the
lane's head (coalescing what waits, up to ``delivery_max_batch`` deltas and
``delivery_max_batch_bytes``). Many lanes run at once, bounded by ``delivery_concurrency`` and
per endpoint by ``delivery_endpoint_concurrency`` and its circuit breaker, so a slow or
failing endpoint holds back only its own consents.

Failures are retried on ``delivery_retry_schedule_s``. A short wait is held in memory; a long
one (``delivery_park_after_s`` or more, an open circuit, a disabled endpoint) *parks* the lane:
each of its records is copied to ``deliveries.retry`` with its retry state in headers (see
:mod:`~portability.delivery.parking`), and the record's previous offset is released only when
the copy comes back from the broker. So an offset is committed only when its delivery is done
(delivered, dropped for a stopped consent, dead-lettered) or durably parked, and a crash loses
nothing: on assignment the retry partition is read to its end before the deliveries of the
same partition number, so a parked consent's lane is rebuilt, in sequence, before anything
newer of it is delivered. After a crash a delta may be delivered again, always with the same
id and sequence. Past ``delivery_max_parked`` parked records in memory, waiting parked lanes
are *spilled*: out of memory, read back from the retry topic when due.

Notifications (``authorization.removed``) come from their own topic, partitioned like the
deliveries, and join the consent's lane: they are posted alone, after the consent's deltas,
and are never dropped for a stopped consent, since telling the app it stopped is their point.
Snapshot pages come the same way but carry data: they are dropped for a stopped consent like
deltas, and the deltas of their epoch wait for them.

This module is the role's entry point: it reads, and wires the parts, each in its module
around one :class:`~portability.delivery.lane_book.LaneBook` (the lanes and the offsets held):

=====================  =============================================================
``lanes``              what a lane holds: its records in order, its parking and spill
``intake``             each record read, decoded and put in its lane (the hot path)
``lane_driver``        a task per lane: posts its head, retries, finishes what is done
``attempts``           one request to an endpoint, bounded per endpoint and in all
``snapshot_gate``      deltas held until their snapshot is delivered
``dead_lettering``     records given up on, written to ``dead_letters``
``parker``             lanes parked: records copied to ``deliveries.retry``
``spilling``           parked lanes out of memory, and read back when due
``partitions``         assignment, revocation and commits
=====================  =============================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from portability.broker import RebalanceListener
from portability.delivery.attempts import Attempts
from portability.delivery.dead_lettering import DeadLettering
from portability.delivery.delivery_log import DeliveryLog
from portability.delivery.directory import Directory
from portability.delivery.feed import FeedWriter
from portability.delivery.intake import Intake
from portability.delivery.lane_book import LaneBook
from portability.delivery.lane_driver import LaneDriver
from portability.delivery.ledger_book import LedgerBook
from portability.delivery.parker import Parker
from portability.delivery.partitions import Partitions, cancel
from portability.delivery.snapshot_gate import SnapshotGate
from portability.delivery.spilling import Reloader, Spiller
from portability.delivery.stats import DeliveryStats
from portability.delivery.status import StatusBoard
from portability.runtime import Runtime

__all__ = ["DeliveryWorker"]

log = logging.getLogger(__name__)

_FULL_POLL_MS = 50  # reading no new deliveries, how often the bounds are re-checked


class DeliveryWorker:
    """One worker instance; ``start``, then ``run`` until ``stop``."""

    def __init__(self, runtime: Runtime, client_id: str = "portability-delivery") -> None:
        settings, topics = runtime.settings, runtime.topics
        self._settings = settings
        self._topics = topics
        self._consumer: AIOKafkaConsumer = runtime.kafka.group_consumer(
            settings.delivery_group, client_id
        )
        self._producer: AIOKafkaProducer = runtime.kafka.producer(client_id)
        self.directory = Directory(runtime, f"{client_id}-directory")
        self.stats = DeliveryStats()
        self.status = StatusBoard(runtime)
        self._stopping = asyncio.Event()
        self._book = book = LaneBook(settings, topics.deliveries_retry)
        self._lanes = book.lanes
        self.log = DeliveryLog(self._producer, runtime.codec, topics.delivery_log, self.stats)
        self.ledgers = LedgerBook(self._producer, runtime.codec, topics.delivery_ledger, self.stats)
        self._attempts = Attempts(
            settings,
            self.directory,
            book.lanes,
            self.stats,
            self.status,
            self.log,
            self.ledgers,
            FeedWriter(self._producer, topics.feed, settings.partitions),
        )
        self.endpoints = self._attempts.endpoints
        dead_letters = DeadLettering(self._producer, topics, book, self.stats)
        parker = Parker(self._producer, topics.deliveries_retry, settings.partitions, self.stats)
        spiller = Spiller(book, self._attempts, self.stats)
        self._gate = SnapshotGate(
            self._consumer,
            topics.notifications,
            self.directory,
            book,
            self.stats,
            self.status,
            self.ledgers.restored,
        )
        self._driver = LaneDriver(
            settings,
            self.directory,
            book,
            gate=self._gate,
            attempts=self._attempts,
            dead_letters=dead_letters,
            parker=parker,
            spiller=spiller,
            stats=self.stats,
            status=self.status,
            stopping=self._stopping,
        )
        self._intake = Intake(
            runtime,
            book,
            self.directory,
            self.stats,
            dead_letters,
            parker.park,
            self._driver.lane,
            self.ledgers,
        )
        self._reloader = Reloader(
            self._consumer,
            book,
            spiller,
            self._attempts,
            self.directory,
            self.stats,
            settings.delivery_max_parked,
            self._driver.lane,
        )
        self._partitions = Partitions(
            self._consumer, self._producer, topics, book, self.status, self.ledgers, self.log
        )
        self._paused: str | None = None  # why reading was paused when last checked
        self._committer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._producer.start()
        await self._attempts.sender.start()
        await self.directory.start()
        self.directory.on_revocation(self._driver.drop)
        # A new URL replaces a disabled endpoint and wakes the lanes parked on it.
        self.directory.on_app(self._attempts.app_changed)
        self.endpoints.on_disabled.append(self._attempts.endpoint_disabled)
        await self._consumer.start()
        self._consumer.subscribe(
            [
                self._topics.deliveries,
                self._topics.notifications,
                self._topics.deliveries_retry,
                self._topics.delivery_ledger,
            ],
            listener=RebalanceListener(on_revoked=self.on_revoked, on_assigned=self.on_assigned),
        )
        self._committer = asyncio.create_task(
            self._partitions.commit_loop(), name="delivery-commit"
        )

    async def stop(self) -> None:
        self._stopping.set()
        self._book.capacity.set()
        await cancel(list(self._lanes.values()))
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        await self._partitions.commit()
        await self.status.flush(self._producer)
        await self._consumer.stop()
        await self.directory.stop()
        await self._attempts.sender.stop()
        await self._producer.stop()

    @property
    def pending(self) -> int:
        """Records received and not yet finished (parked ones count until they are done)."""
        return self._book.pending

    @property
    def in_hand(self) -> int:
        """Records read from deliveries or notifications and not finished: bounded by
        ``delivery_max_in_hand``. A parked record counts here until its copy is read back."""
        return self._book.in_hand

    @property
    def reading_paused(self) -> str | None:
        """Why new deliveries are not read now: ``in_hand`` or ``parked`` (a bound is
        reached; see :meth:`run`); None while they are."""
        return self._book.reading_paused

    @property
    def parked(self) -> int:
        """Records waiting in parked lanes."""
        return self._book.parked

    @property
    def spilled(self) -> int:
        """Parked records out of memory (spilled lanes), to be read back when due."""
        return self._book.spilled_records

    @property
    def awaiting_snapshot(self) -> int:
        """Consents whose head delta waits for a snapshot not delivered yet (as seen here)."""
        return self._gate.awaiting

    @property
    def retrying(self) -> int:
        """Consents whose next request is a retry (waiting in memory or parked)."""
        return self._book.retrying

    async def run(self) -> None:
        """Consume and dispatch until :meth:`stop`.

        Two bounds keep memory in check: records in hand (``delivery_max_in_hand``) and
        parked records (``delivery_max_parked``, counted apart so that one app's long outage
        does not stop the others' deliveries). Past the second, waiting parked lanes are
        spilled out of memory (see :mod:`~portability.delivery.spilling`). At either, if that
        is not enough, no new deliveries are read, but the retry topic and notifications
        still are, or the worker could wait on itself: the copies of records being parked
        must come back to free them (when every endpoint is down), and deltas held for a
        snapshot wait for its pages. Notifications are few (removals, pages), and a removal
        should not wait behind a full worker.
        """
        is_loading = self._partitions.is_loading
        while not self._stopping.is_set():
            await self._reloader.tend()
            paused = self._book.reading_paused
            self._note_pause(paused)
            if paused is None:
                batch = await self._consumer.getmany(timeout_ms=200)
            else:
                batch = await self._read_while_full()
            assigned = self._consumer.assignment()
            for tp, records in batch.items():
                if tp not in assigned or is_loading(tp):
                    continue  # fetched before a rebalance or the retry records: read again
                await self._accept_all(tp, records)
            await self._partitions.resume_loaded()

    async def _accept_all(
        self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]
    ) -> None:
        """Take a partition's fetched records in, in order.

        Synchronous as a rule (a coroutine per record cost more than the rest of accepting
        it): fresh deltas in runs, anything else one by one; awaited only when a record needs
        I/O to be placed. Each turn takes at least one record.
        """
        index = 0
        while index < len(records):
            index, waiting = self._intake.accept_deltas(tp, records, index)
            if waiting is None and index < len(records):
                waiting = self._intake.accept(tp, records[index])
                index += 1
            if waiting is not None:
                await waiting

    async def _read_while_full(self) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """Records of the retry topic and notifications only (see :meth:`run`)."""
        still_read = (
            self._topics.deliveries_retry,
            self._topics.notifications,
            self._topics.delivery_ledger,
        )
        partitions = [tp for tp in self._consumer.assignment() if tp.topic in still_read]
        if not partitions:  # getmany() of no partition would read them all
            capacity = self._book.capacity
            capacity.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(capacity.wait(), _FULL_POLL_MS / 1000)
            return {}
        batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
        batch = await self._consumer.getmany(*partitions, timeout_ms=_FULL_POLL_MS)
        return batch

    def _note_pause(self, paused: str | None) -> None:
        """Tell operators once when parked records stop the reading (in hand is mere load)."""
        if paused == self._paused:
            return
        if paused == "parked" and any(lane.spill_wanted for lane in self._lanes.values()):
            return  # lanes are being spilled: over in a moment
        self._paused = paused
        if paused != "parked":
            return
        owed: dict[str, int] = {}
        for lane in self._lanes.values():
            if lane.parked and lane.queue:
                owed[lane.queue[0].app_id] = owed.get(lane.queue[0].app_id, 0) + len(lane.queue)
        apps = ", ".join(
            f"{app_id} ({count:,})" for app_id, count in sorted(owed.items(), key=_count)[:5]
        )
        log.warning(
            "delivery reading paused: %d parked records reach PORTABILITY_DELIVERY_MAX_PARKED "
            "(%d) and none can leave memory now (their endpoints take requests again); no app "
            "gets new deliveries until some are delivered. Most parked: %s",
            self._book.parked_in_memory(),
            self._settings.delivery_max_parked,
            apps or "-",
            extra={"event": "delivery.paused", "reason": paused},
        )

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Hold new partitions' deliveries until their parked records are back in the lanes
        (see :meth:`Partitions.assigned <portability.delivery.partitions.Partitions>`)."""
        await self._partitions.assigned(assigned)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Stop the lanes of revoked partitions; their new owner delivers what was not done."""
        await self._partitions.revoked(revoked)


def _count(entry: tuple[str, int]) -> int:
    return -entry[1]  # most first
