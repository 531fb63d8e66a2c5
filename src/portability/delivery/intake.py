"""Intake: each record the delivery worker reads, decoded and put in its consent's lane.

Three topics feed the lanes: ``deliveries`` (deltas), ``notifications`` (removals and
snapshot pages) and ``deliveries.retry`` (parked copies: our own coming back, or another
worker's to rebuild a lane after a rebalance or a crash). A record read again in a rewind
(see :mod:`~portability.delivery.spilling`) is taken back by its reloading lane.

This is the worker's hot path: a fresh delta whose head reads off its bytes is placed
synchronously, with no coroutine and no lookup beyond what placing it needs (the lane book's
collections are held here directly). Anything else goes through :meth:`Intake.decode`, which
may have to fetch a schema or send a dead letter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from portability.delivery.dead_lettering import DeadLettering
from portability.delivery.directory import Directory
from portability.delivery.lane_book import LaneBook
from portability.delivery.lanes import FRESH, Item, Lane, received
from portability.delivery.ledger_book import LedgerBook
from portability.delivery.offsets import OffsetTracker
from portability.delivery.parking import ParkingTicket, RecordKind
from portability.delivery.stats import DeliveryStats
from portability.runtime import Runtime
from portability.webhooks.payload import delivery_head
from portability.wire.errors import WireFormatError
from portability.wire.notifications import AUTHORIZATION_REMOVED, SnapshotPage
from portability.wire.records import DeliveryHead
from portability.wire.schemas import SchemaName

__all__ = ["Intake"]


class Intake:
    """Puts read records in their lanes; ``drive`` gets a lane with a task driving it."""

    def __init__(
        self,
        runtime: Runtime,
        book: LaneBook,
        directory: Directory,
        stats: DeliveryStats,
        dead_letters: DeadLettering,
        park: Callable[[Lane], Coroutine[Any, Any, None]],
        drive: Callable[[str, int], Lane],
        ledgers: LedgerBook,
    ) -> None:
        self._runtime = runtime
        self._topics = runtime.topics
        self._deliveries_topic = runtime.topics.deliveries
        self._codec = runtime.codec
        self._book = book
        self._trackers = book.trackers
        self._rewinds = book.rewinds
        self._release = book.release
        self._directory = directory
        self._stats = stats
        self._dead_letters = dead_letters
        self._park = park
        self._lane = drive
        self._ledgers = ledgers
        self._restored = ledgers.restored
        self._ledger_topic = runtime.topics.delivery_ledger
        self._loading = book.loading

    def accept(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]
    ) -> Awaitable[None] | None:
        """Take in a record :meth:`accept_deltas` did not take; what is left to await when it
        needs I/O (None as a rule).

        A ledger head is restored and a retry record read again in a rewind taken back;
        anything else (a notification, a parked copy, a delta to decode in full or to
        dead-letter) goes through :meth:`decode`, which may have to fetch a schema or send a
        dead letter.
        """
        if tp.topic == self._ledger_topic:
            self._stats.ledger_heads_read += 1
            if tp.partition in self._loading:  # after that, only this worker's own heads
                self._ledgers.restore(tp.partition, record.offset, record.value)
            return None
        rewound_to = self._rewinds.get(tp)
        if rewound_to is not None and record.offset < rewound_to:
            return self._reread(tp, record)
        tracker = self._trackers.get(tp)
        if tracker is None:
            tracker = self._trackers[tp] = OffsetTracker()
        tracker.add(record.offset)
        return self._accept_decoded(tp, record)

    def accept_deltas(
        self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]], start: int
    ) -> tuple[int, Awaitable[None] | None]:
        """The fresh deltas in ``records`` from ``start``, in one loop: each whose head reads
        off its bytes is placed at once, with no coroutine and no lookup beyond what placing
        it needs (this runs per delta).

        Returns the index of the first record not taken (:meth:`accept` takes it: not a fresh
        delta, or one to decode in full or to dead-letter), and what is left to await of the
        last one placed (parking), if anything: the caller awaits it before going on.
        """
        if tp.topic != self._deliveries_topic:
            return start, None
        # Looked up once per fetched batch, not per record.
        tracker = self._trackers.get(tp)
        if tracker is None:
            tracker = self._trackers[tp] = OffsetTracker()
        add, read, place, fresh = tracker.add, self._codec.delivery_head, self._place, FRESH
        for index in range(start, len(records)):
            record = records[index]
            try:
                head = read(record.value)
            except WireFormatError:
                head = None
            if head is None:
                return index, None
            add(record.offset)
            item = received(tp, record, fresh["delivery"])
            item.delivery = head
            waiting = place(tp, item)
            if waiting is not None:
                return index + 1, waiting
        return len(records), None

    async def _accept_decoded(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]
    ) -> None:
        item = await self.decode(tp, record)
        if item is not None:
            waiting = self._place(tp, item)
            if waiting is not None:
                await waiting

    def _place(self, tp: TopicPartition, item: Item) -> Awaitable[None] | None:
        """Put a decoded record in its lane; what is left to await (parking), if anything."""
        consent_id = item.consent_id
        if self._restored and self._ledgers.delivered_before(item):
            # Delivered before this worker took the partition over (its ledger head says so).
            self._stats.dropped_delivered += 1
            self._release(item)
            return None
        if tp.topic == self._topics.deliveries_retry:
            self._accept_parked(consent_id, item)
            return None
        if item.carries_data and self._directory.is_stopped(consent_id):
            self._stats.dropped_stopped_consent += 1
            self._release(item)
            return None
        lane = self._lane(consent_id, tp.partition)
        lane.insert(item)
        if item.notification is not None and item.notification["event_type"] == (
            AUTHORIZATION_REMOVED
        ):
            # The removal may reach this worker before the consent's new state does: no
            # delta may follow the event that says the flow stopped.
            self._directory.mark_stopped(consent_id)
        if lane.parked:
            return self._park(lane)  # behind its parked records, durably
        return None

    def _accept_parked(self, consent_id: str, item: Item) -> None:
        """A record read from the retry topic: our own copy coming back, or one to rebuild."""
        lane = self._lane(consent_id, item.tp.partition)
        lane.parked = True
        known = lane.find(item.identity)
        if lane.spill is not None:
            # The copy of a record that came after the spill joins the spilled ones: on the
            # retry topic only, past the lane's pin.
            if known is not None:
                lane.queue.remove(known)
                self._release(known)
            self._release(item)
            lane.spill.records += 1
            self._stats.spilled += 1
            return
        if known is None:
            item.stored = item.ticket
            lane.insert(item)
            self._stats.parked_loaded += 1
            return
        if known.tp != item.tp or known.offset != item.offset:
            self._release(known)  # the older copy (or the source record) is superseded
        known.tp, known.offset, known.raw = item.tp, item.offset, item.raw
        # Our own copy carries the state it was sent with (the same object: not stale); a
        # copy from elsewhere (another worker's, before a rebalance), the state read.
        own = known.parking and known.copied is not None
        known.stored = known.copied if own else item.ticket
        known.parking, known.copied, known.reread = False, None, False
        lane.changed.set()

    def _reread(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]
    ) -> Awaitable[None] | None:
        """A retry record read again in a rewind: taken back by a reloading lane, else
        skipped (it was handled when first read)."""
        lane = self._book.lanes.get(record.key.decode()) if record.key else None
        if lane is None or not lane.reloading:
            return None
        return self._take_back(tp, record, lane)

    async def _take_back(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], lane: Lane
    ) -> None:
        item = await self.decode(tp, record, reread=True)
        if item is None or (lane.finished is not None and item.order <= lane.finished):
            return  # undecodable (dead-lettered before), or a copy of a record finished already
        item.reread = True
        item.stored = item.ticket
        known = lane.find(item.identity)
        if known is None:
            lane.insert(item)
            self._book.reread_held += 1
        elif known.reread and item.offset > known.offset:
            # A later copy of a record this rewind brought back: its state is newer.
            known.tp, known.offset, known.raw = item.tp, item.offset, item.raw
            known.ticket = known.stored = item.ticket
        # Otherwise memory holds a newer state of it: read after the spill, or being copied.

    async def decode(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], *, reread: bool = False
    ) -> Item | None:
        """The record as a lane item; None if undecodable (dead-lettered, unless ``reread``:
        a record read again in a rewind was dead-lettered when first read)."""
        kind: RecordKind = "notification" if tp.topic == self._topics.notifications else "delivery"
        ticket = FRESH[kind]
        try:
            if tp.topic == self._topics.deliveries_retry:
                ticket = ParkingTicket.from_headers(record.headers or ())
            if ticket.kind == "delivery":
                # As a rule read off the bytes, without decoding the change (see _decoded_head).
                delivery = self._runtime.codec.delivery_head(
                    record.value
                ) or await self._decoded_head(record.value)
            else:
                notification = await self._runtime.codec.decode_fetching(
                    SchemaName.NOTIFICATION, record.value
                )
        # TypeError: a change whose record JSON cannot carry (it cannot be rendered).
        except (WireFormatError, ValueError, TypeError) as error:
            if not reread:
                await self._dead_letters.record(tp, record, str(error))
            return None
        item = received(tp, record, ticket)
        if ticket.kind == "delivery":
            item.delivery = delivery
        else:
            item.notification = notification
            item.page = SnapshotPage.of(notification)
        return item

    async def _decoded_head(self, value: bytes | None) -> DeliveryHead:
        """The head of a delta written with another schema than this build's, or without a
        rendering: decoded in full, and its change rendered here."""
        decoded = await self._runtime.codec.decode_fetching(SchemaName.DELIVERY, value)
        return delivery_head(decoded)
