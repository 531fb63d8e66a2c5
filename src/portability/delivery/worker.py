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
are *spilled*: out of memory, read back from the retry topic when due (see _manage_spills).

Notifications (``authorization.removed``) come from their own topic, partitioned like the
deliveries, and join the consent's lane: they are posted alone, after the consent's deltas,
and are never dropped for a stopped consent, since telling the app it stopped is their point.

Snapshot pages (``portability.snapshot``, see :mod:`portability.transfers.snapshots`) come
the same way but carry data: they are dropped for a stopped consent like deltas. A delta
stamped with a snapshot epoch this worker has not seen delivered is held until the epoch's
last page is delivered; then the deltas whose source offset the snapshot already covers are
dropped, and the rest follow. After a restart, a snapshot counts as delivered when the
group's committed offset on ``notifications`` is past its last page (recorded on the
consent by the builder).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from portability.delivery.directory import Directory
from portability.delivery.endpoints import Endpoint, Endpoints
from portability.delivery.offsets import OffsetTracker
from portability.delivery.parking import Attempt, ParkingTicket, RecordKind, now_utc
from portability.delivery.retry_schedule import RetrySchedule
from portability.delivery.sender import Outcome, WebhookSender
from portability.delivery.stats import DeliveryStats
from portability.delivery.status import StatusBoard
from portability.privacy import is_audience_record_id
from portability.runtime import Runtime
from portability.webhooks.payload import delivery_head, head_delta_event, notification_event
from portability.wire.dead_letters import HEADER_PREFIX, DeadLetter
from portability.wire.errors import WireFormatError
from portability.wire.notifications import AUTHORIZATION_REMOVED, SnapshotPage
from portability.wire.records import AppRecord, DeliveryHead, NotificationRecord
from portability.wire.schemas import SchemaName
from portability.wire.topics import partition_for_consent

__all__ = ["DeliveryWorker"]

log = logging.getLogger(__name__)

_SECRETS_UNOPENED = (
    "the delivery worker cannot open this app's signing secrets (its secrets key is not the "
    "one that sealed them): retried until an operator fixes the key"
)

_FULL_POLL_MS = 50  # reading no new deliveries, how often the bounds are re-checked
_SPILL_TO = 0.5  # spilling parked lanes brings the parked records held down to this share
_RELOAD_CHECK_S = 0.25  # how often spilled lanes are checked for being due
_COMMIT_INTERVAL_S = 0.1
_STATUS_EVERY = 10  # status is informational: flushed every tenth commit round (1 s)
_IDLE_RECHECK_S = 5.0
_REPLAYED_FROM = (
    f"{HEADER_PREFIX}replayed_from"  # a waiting lane re-checks its endpoint at least this often
)
_HANDOVER_ASK_S = 1.0
_AFTER_ALL = 1 << 62  # the epoch part of an order that comes after every delta and page


@dataclass(frozen=True, slots=True)
class _Handover:
    """A snapshot delivered: deltas of source offsets before ``position`` are in it."""

    epoch: int
    position: int


# The retry state of a record not tried yet; tickets are immutable, so one of each kind serves
# every record (a ticket's identity matters only once it is read from the retry topic).
_FRESH: dict[RecordKind, ParkingTicket] = {
    "delivery": ParkingTicket("delivery"),
    "notification": ParkingTicket("notification"),
}


@dataclass(slots=True)
class _Item:
    """A delta (``delivery``) or a notification waiting in a lane.

    ``tp``/``offset`` say where the record is durably stored now: its source topic, or the
    retry topic once parked. ``stored`` is the retry state that copy carries.
    """

    tp: TopicPartition
    offset: int
    raw: bytes
    delivery: DeliveryHead | None = None  # a delta is kept as its head: see _decode
    notification: NotificationRecord | None = None
    ticket: ParkingTicket = _FRESH["delivery"]
    stored: ParkingTicket | None = None  # None: not on the retry topic with this ticket
    parking: bool = False  # a copy is on its way to the retry topic
    copied: ParkingTicket | None = None  # the retry state that copy carries
    reread: bool = False  # read back after a spill: its offset is not tracked (the pin holds)
    replayed_from: bytes | None = None  # dead-letter offset, when an operator replayed it
    page: SnapshotPage | None = None  # set for a snapshot page

    @property
    def kind(self) -> RecordKind:
        return "delivery" if self.delivery is not None else "notification"

    @property
    def identity(self) -> str:
        if self.delivery is not None:
            return self.delivery["delta_id"]
        return self.notification["event_id"] if self.notification is not None else ""

    @property
    def order(self) -> tuple[int, int, int, int]:
        """Place in the lane: by snapshot epoch, then a snapshot's pages before its deltas,
        then deltas by sequence; other notifications after everything.

        Pages go by position, then number: a snapshot built again (its builder failed half
        way) stands at a later position, so its pages follow the first build's instead of
        interleaving with them.
        """
        if self.delivery is not None:
            return (self.epoch, 1, self.delivery["sequence"], 0)
        if self.page is not None:
            return (self.page.epoch, 0, self.page.position, self.page.page)
        return (_AFTER_ALL, 2, 0, 0)

    @property
    def epoch(self) -> int:
        """The snapshot epoch a delta was matched under (0: none)."""
        return self.delivery["snapshot_epoch"] if self.delivery is not None else 0

    @property
    def carries_data(self) -> bool:
        """A delta or a snapshot page: not delivered once the consent stopped."""
        return self.delivery is not None or self.page is not None

    @property
    def in_snapshot(self) -> bool:
        """Whether the delta's change is one a snapshot at ``position`` could hold."""
        return self.delivery is not None and not is_audience_record_id(self.delivery["record_id"])

    @property
    def app_id(self) -> str:
        event = self.delivery or self.notification
        return event["app_id"] if event is not None else ""

    @property
    def consent_id(self) -> str:
        event = self.delivery or self.notification
        return event["consent_id"] if event is not None else ""


@dataclass(slots=True)
class _Spill:
    """What is left in memory of a spilled lane: its records are on the retry topic only."""

    records: int
    not_before: float  # the head's retry time, as in its ticket
    app_id: str


@dataclass(slots=True)
class _Lane:
    consent_id: str
    partition: int
    queue: deque[_Item] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    in_flight: int = 0  # leading items of the queue in the request being made
    parked: bool = False  # its records live on the retry topic until the lane empties
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Spilling (see DeliveryWorker._spill): the retry offset kept uncommitted for the lane's
    # records while they are out of memory or read back, until the lane empties.
    pin: int | None = None
    spill: _Spill | None = None
    spill_wanted: bool = False
    reloading: bool = False  # its records are being read back from the retry topic
    finished: tuple[int, int, int, int] | None = None  # order of the latest record finished

    def insert(self, item: _Item) -> None:
        """Add in order: appended as a rule, sorted in when read back from the retry topic."""
        index = len(self.queue)
        while index > self.in_flight and self.queue[index - 1].order > item.order:
            index -= 1
        self.queue.insert(index, item)
        self.changed.set()

    @property
    def app_id(self) -> str | None:
        """The app of its head record (or of its spilled ones); None when it holds none."""
        if self.queue:
            return self.queue[0].app_id
        return self.spill.app_id if self.spill is not None else None

    def find(self, identity: str) -> _Item | None:
        return next((item for item in self.queue if item.identity == identity), None)


class DeliveryWorker:
    """One worker instance; ``start``, then ``run`` until ``stop``."""

    def __init__(self, runtime: Runtime, client_id: str = "portability-delivery") -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._topics = runtime.topics
        self._deliveries_topic = runtime.topics.deliveries
        self._codec = runtime.codec
        self._consumer: AIOKafkaConsumer = runtime.kafka.group_consumer(
            runtime.settings.delivery_group, client_id
        )
        self._producer: AIOKafkaProducer = runtime.kafka.producer(client_id)
        self.directory = Directory(runtime, f"{client_id}-directory")
        self._sender = WebhookSender(runtime.settings)
        self._schedule = RetrySchedule(
            runtime.settings.delivery_retry_schedule_s, runtime.settings.delivery_retry_jitter
        )
        self.endpoints = Endpoints(runtime.settings)
        self._slots = asyncio.Semaphore(runtime.settings.delivery_concurrency)
        self._lanes: dict[str, _Lane] = {}
        self._trackers: dict[TopicPartition, OffsetTracker] = {}
        self._loading: set[int] = set()  # partitions whose retry records are being read
        self._spilled: set[str] = set()  # consents whose lanes are spilled
        self._rewinds: dict[TopicPartition, int] = {}  # retry partition -> end of the re-read
        self._reread_held = 0  # records read back in rewinds and not finished (not tracked)
        self._reloads_checked = 0.0
        self._handovers: dict[str, _Handover] = {}  # latest snapshot delivered, per consent
        self._handover_asked: dict[str, float] = {}  # when the committed offset was asked
        self._capacity = asyncio.Event()
        self._paused: str | None = None  # why reading was paused when last checked
        self._stopping = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self.stats = DeliveryStats()
        self.status = StatusBoard(runtime)

    async def start(self) -> None:
        await self._producer.start()
        await self._sender.start()
        await self.directory.start()
        self.directory.on_revocation(self._drop_lane)
        # A new URL replaces a disabled endpoint and wakes the lanes parked on it.
        self.directory.on_app(self._app_changed)
        self.endpoints.on_disabled.append(self._endpoint_disabled)
        await self._consumer.start()
        self._consumer.subscribe(
            [self._topics.deliveries, self._topics.notifications, self._topics.deliveries_retry],
            listener=_Rebalance(self),
        )
        self._committer = asyncio.create_task(self._commit_loop(), name="delivery-commit")

    async def stop(self) -> None:
        self._stopping.set()
        self._capacity.set()
        await self._cancel_lanes(list(self._lanes.values()))
        if self._committer is not None:
            self._committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._committer
        await self._commit()
        await self.status.flush(self._producer)
        await self._consumer.stop()
        await self.directory.stop()
        await self._sender.stop()
        await self._producer.stop()

    @property
    def pending(self) -> int:
        """Records received and not yet finished (parked ones count until they are done)."""
        return sum(tracker.outstanding for tracker in self._trackers.values())

    @property
    def in_hand(self) -> int:
        """Records read from deliveries or notifications and not finished: bounded by
        ``delivery_max_in_hand``. A parked record counts here until its copy is read back."""
        return self._outstanding(parked=False)

    @property
    def reading_paused(self) -> str | None:
        """Why new deliveries are not read now: ``in_hand`` or ``parked`` (a bound is
        reached; see :meth:`run`); None while they are."""
        if self.in_hand >= self._settings.delivery_max_in_hand:
            return "in_hand"
        if self._parked_in_memory() >= self._settings.delivery_max_parked:
            return "parked"
        return None

    def _parked_in_memory(self) -> int:
        """Parked records held in memory: those tracked on the retry topic, but the pins of
        spilled lanes (their records are out), and those read back in rewinds (untracked)."""
        return self._outstanding(parked=True) - len(self._spilled) + self._reread_held

    def _outstanding(self, *, parked: bool) -> int:
        retry = self._topics.deliveries_retry
        return sum(
            tracker.outstanding
            for tp, tracker in self._trackers.items()
            if (tp.topic == retry) == parked
        )

    @property
    def parked(self) -> int:
        """Records waiting in parked lanes."""
        return sum(
            len(lane.queue) + (lane.spill.records if lane.spill is not None else 0)
            for lane in self._lanes.values()
            if lane.parked
        )

    @property
    def spilled(self) -> int:
        """Parked records out of memory (spilled lanes), to be read back when due."""
        return sum(lane.spill.records for lane in self._lanes.values() if lane.spill is not None)

    @property
    def awaiting_snapshot(self) -> int:
        """Consents whose head delta waits for a snapshot not delivered yet (as seen here)."""
        waiting = 0
        for lane in self._lanes.values():
            head = next((item for item in lane.queue if item.delivery is not None), None)
            known = self._handovers.get(lane.consent_id)
            if head is not None and head.epoch > (0 if known is None else known.epoch):
                waiting += 1
        return waiting

    @property
    def retrying(self) -> int:
        """Consents whose next request is a retry (waiting in memory or parked)."""
        lanes = self._lanes.values()
        return sum(
            1
            for lane in lanes
            if lane.spill is not None or (lane.queue and lane.queue[0].ticket.failures > 0)
        )

    async def run(self) -> None:
        """Consume and dispatch until :meth:`stop`.

        Two bounds keep memory in check: records in hand (``delivery_max_in_hand``) and
        parked records (``delivery_max_parked``, counted apart so that one app's long outage
        does not stop the others' deliveries). Past the second, waiting parked lanes are
        spilled out of memory (see :meth:`_spill`). At either, if that is not enough, no new
        deliveries are read, but the retry topic and notifications still are, or the worker
        could wait on itself: the copies of records being parked must come back to free them
        (when every endpoint is down), and deltas held for a snapshot wait for its pages.
        Notifications are few (removals, pages), and a removal should not wait behind a full
        worker.
        """
        while not self._stopping.is_set():
            await self._manage_spills()
            paused = self.reading_paused
            self._note_pause(paused)
            if paused is None:
                batch = await self._consumer.getmany(timeout_ms=200)
            else:
                batch = await self._read_while_full()
            assigned = self._consumer.assignment()
            for tp, records in batch.items():
                if tp not in assigned or self._is_loading(tp):
                    continue  # fetched before a rebalance or the retry records: read again
                for record in records:
                    # Synchronous as a rule: a coroutine per record cost more than the rest of
                    # accepting it. Awaited only when the record needs I/O to be placed.
                    waiting = self._accept(tp, record)
                    if waiting is not None:
                        await waiting
            await self._resume_loaded()

    async def _read_while_full(self) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """Records of the retry topic and notifications only (see :meth:`run`)."""
        still_read = (self._topics.deliveries_retry, self._topics.notifications)
        partitions = [tp for tp in self._consumer.assignment() if tp.topic in still_read]
        if not partitions:  # getmany() of no partition would read them all
            self._capacity.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._capacity.wait(), _FULL_POLL_MS / 1000)
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
            self._parked_in_memory(),
            self._settings.delivery_max_parked,
            apps or "-",
            extra={"event": "delivery.paused", "reason": paused},
        )

    # -- reading ------------------------------------------------------------------------------

    def _is_loading(self, tp: TopicPartition) -> bool:
        return tp.topic != self._topics.deliveries_retry and tp.partition in self._loading

    def _accept(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]
    ) -> Awaitable[None] | None:
        """Take a record in; what is left to await when it needs I/O (None as a rule).

        A fresh delta whose head reads off its bytes is placed at once; anything else (a
        notification, a parked copy, a record to decode in full or to dead-letter) goes
        through :meth:`_decode`, which may have to fetch a schema or send a dead letter.
        """
        rewound_to = self._rewinds.get(tp)
        if rewound_to is not None and record.offset < rewound_to:
            return self._reread(tp, record)
        tracker = self._trackers.get(tp)
        if tracker is None:
            tracker = self._trackers[tp] = OffsetTracker()
        tracker.add(record.offset)
        if tp.topic == self._deliveries_topic:
            try:
                head = self._codec.delivery_head(record.value)
            except WireFormatError:
                head = None  # _decode reads it again and dead-letters it with the reason
            if head is not None:
                item = _received(tp, record, _FRESH["delivery"])
                item.delivery = head
                return self._place(tp, item)
        return self._accept_decoded(tp, record)

    async def _accept_decoded(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]
    ) -> None:
        item = await self._decode(tp, record)
        if item is not None:
            waiting = self._place(tp, item)
            if waiting is not None:
                await waiting

    def _place(self, tp: TopicPartition, item: _Item) -> Awaitable[None] | None:
        """Put a decoded record in its lane; what is left to await (parking), if anything."""
        consent_id = item.consent_id
        if tp.topic == self._topics.deliveries_retry:
            self._accept_parked(consent_id, item)
            return None
        if item.carries_data and self.directory.is_stopped(consent_id):
            self.stats.dropped_stopped_consent += 1
            self._release(item)
            return None
        lane = self._lane(consent_id, tp.partition)
        lane.insert(item)
        if item.notification is not None and item.notification["event_type"] == (
            AUTHORIZATION_REMOVED
        ):
            # The removal may reach this worker before the consent's new state does: no
            # delta may follow the event that says the flow stopped.
            self.directory.mark_stopped(consent_id)
        if lane.parked:
            return self._park(lane)  # behind its parked records, durably
        return None

    def _accept_parked(self, consent_id: str, item: _Item) -> None:
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
            self.stats.spilled += 1
            return
        if known is None:
            item.stored = item.ticket
            lane.insert(item)
            self.stats.parked_loaded += 1
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

    async def _decode(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], *, reread: bool = False
    ) -> _Item | None:
        """The record as a lane item; None if undecodable (dead-lettered, unless ``reread``:
        a record read again in a rewind was dead-lettered when first read)."""
        kind: RecordKind = "notification" if tp.topic == self._topics.notifications else "delivery"
        ticket = _FRESH[kind]
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
                await self._dead_letter_record(tp, record, str(error))
            return None
        item = _received(tp, record, ticket)
        if ticket.kind == "delivery":
            item.delivery = delivery
        else:
            item.notification = notification  # type: ignore[assignment]
            item.page = SnapshotPage.of(item.notification)  # type: ignore[arg-type]
        return item

    async def _decoded_head(self, value: bytes | None) -> DeliveryHead:
        """The head of a delta written with another schema than this build's, or without a
        rendering: decoded in full, and its change rendered here."""
        decoded = await self._runtime.codec.decode_fetching(SchemaName.DELIVERY, value)
        return delivery_head(decoded)  # type: ignore[arg-type]

    def _lane(self, consent_id: str, partition: int) -> _Lane:
        lane = self._lanes.get(consent_id)
        if lane is None:
            lane = self._lanes[consent_id] = _Lane(consent_id, partition)
        if lane.task is None:
            lane.task = asyncio.create_task(self._drive(lane), name=f"lane-{consent_id}")
            lane.task.add_done_callback(_report_crash)
        return lane

    # -- delivering ---------------------------------------------------------------------------

    async def _drive(self, lane: _Lane) -> None:
        """Deliver the lane's records in order until it is empty."""
        # No yield first: the lane is made by the reader, which puts the record in before it
        # next awaits, and its whole fetched batch before it next awaits the consumer.
        try:
            while lane.queue and not self._stopping.is_set():
                lane.changed.clear()
                if lane.spill_wanted:
                    self._spill(lane)
                    continue
                if lane.spill is not None or lane.reloading:
                    # Nothing of it goes out before its spilled records are back in order.
                    await self._park(lane)
                    await self._wait(lane, _IDLE_RECHECK_S)
                    continue
                wait = await self._ready_in(lane)
                if not lane.queue:
                    break  # the rest was dropped: a delivered snapshot holds it
                if wait > 0:
                    await self._wait(lane, wait)
                    continue
                items = self._next_request(lane)
                lane.in_flight = len(items)
                try:
                    await self._deliver(lane, items)
                finally:
                    lane.in_flight = 0
        finally:
            lane.task = None
            if (
                not lane.queue
                and lane.spill is None
                and not lane.reloading
                and self._lanes.get(lane.consent_id) is lane
            ):
                self._unpin(lane)
                del self._lanes[lane.consent_id]

    async def _ready_in(self, lane: _Lane) -> float:
        """Seconds before the lane's head may be attempted (0: now), parking if that is long."""
        if await self._held_for_snapshot(lane):
            return _IDLE_RECHECK_S  # woken when a page arrives; re-checked now and then
        if not lane.queue:
            return 0.0
        head = lane.queue[0]
        if head.parking:
            return _IDLE_RECHECK_S  # woken when the copy comes back
        if head.carries_data and self.directory.is_stopped(lane.consent_id):
            return 0.0  # dropped at once by _deliver
        wait = head.ticket.not_before - time.time()
        endpoint = self._endpoint(head.app_id)
        if wait <= 0 and endpoint is not None:
            # Asked only when the head is due: in a half-open circuit the asker is the probe.
            wait = self.endpoints.wait_s(endpoint)
        if wait >= self._settings.delivery_park_after_s:
            # Parks the lane, or, parked already, stores the retry state its records got
            # since (a disabled endpoint's attempts leave it to here). A copy coming back
            # wakes the lane.
            await self._park(lane)
        return max(wait, 0.0)

    async def _held_for_snapshot(self, lane: _Lane) -> bool:
        """Settle the deltas at the head against the consent's snapshot; True: wait for it.

        Deltas a delivered snapshot already holds are dropped; a delta of an epoch whose
        snapshot is not delivered yet holds the lane (its pages sort in before it).
        """
        while lane.queue and lane.in_flight == 0:
            head = lane.queue[0]
            if head.delivery is None or head.parking:
                return False
            handover = await self._handover(lane)
            if head.epoch > (0 if handover is None else handover.epoch):
                return True
            source_offset = head.delivery.get("source_offset", -1)
            if handover is None or not 0 <= source_offset < handover.position:
                return False
            if not head.in_snapshot:
                return False
            lane.queue.popleft()
            self._release(head)
            self.stats.dropped_in_snapshot += 1
            self._wake_reader()
        return False

    async def _handover(self, lane: _Lane) -> _Handover | None:
        """The consent's latest delivered snapshot, as seen here or recorded before a restart."""
        known = self._handovers.get(lane.consent_id)
        published = self.directory.published_snapshot(lane.consent_id)
        if published is None:
            return known
        epoch, position, last_page = published
        if known is not None and known.epoch >= epoch:
            return known
        # Published but not delivered by this process: delivered before it (or by another
        # worker) if the group committed the notifications partition past the last page.
        # Asked at most once a second per consent: every delta arriving wakes a held lane.
        now = time.monotonic()
        if now - self._handover_asked.get(lane.consent_id, 0.0) < _HANDOVER_ASK_S:
            return known
        self._handover_asked[lane.consent_id] = now
        tp = TopicPartition(self._topics.notifications, lane.partition)
        try:
            committed = await self._consumer.committed(tp)
        except KafkaError as error:
            log.warning("cannot read the committed offset of %s (retried): %s", tp, error)
            return known
        if committed is None or committed <= last_page:
            return known
        handover = self._handovers[lane.consent_id] = _Handover(epoch, position)
        self._handover_asked.pop(lane.consent_id, None)
        if lane.queue:  # the status this worker publishes must not forget it
            self.status.snapshot_delivered(lane.consent_id, lane.queue[0].app_id, epoch)
        return handover

    async def _wait(self, lane: _Lane, seconds: float) -> None:
        """Sleep until ``seconds`` passed, the lane changed, or the worker stops."""
        timeout = min(seconds, _IDLE_RECHECK_S)
        waits = [
            asyncio.ensure_future(lane.changed.wait()),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        endpoint = self._endpoint(lane.queue[0].app_id) if lane.queue else None
        if endpoint is not None:
            waits.append(asyncio.ensure_future(endpoint.changed.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    def _next_request(self, lane: _Lane) -> list[_Item]:
        """The lane's head: a notification alone, or the deltas before the next notification."""
        head = lane.queue[0]
        if head.notification is not None:
            return [head]
        items: list[_Item] = []
        size = 0
        for item in lane.queue:
            if (
                item.delivery is None
                or item.parking
                or item.epoch != head.epoch  # a newer epoch waits for its snapshot
                or len(items) >= self._settings.delivery_max_batch
            ):
                break
            size += len(item.raw)
            if items and size > self._settings.delivery_max_batch_bytes:
                break
            items.append(item)
        return items

    async def _deliver(self, lane: _Lane, items: list[_Item]) -> None:
        """One attempt at the head of the lane, and what follows from its outcome."""
        if items[0].carries_data and self.directory.is_stopped(lane.consent_id):
            self._finish(lane, items, dropped=True)
            return
        outcome = await self._attempt(items)
        if outcome.ok:
            self._finish(lane, items)
            return
        failures = items[0].ticket.failures + 1
        self._log_failure(lane, items, outcome, failures)
        if self._endpoint_is_disabled(items[0].app_id):
            # Held (parked) for the app's new URL rather than given up: the data is still owed.
            history = (*items[0].ticket.history, Attempt(now_utc(), outcome.status, outcome.reason))
            for item in items:
                item.ticket = ParkingTicket(item.kind, failures, 0.0, history)
            return
        wait = (
            self._schedule.next_wait(failures, outcome.retry_after_s) if outcome.retriable else None
        )
        history = (*items[0].ticket.history, Attempt(now_utc(), outcome.status, outcome.reason))
        if wait is None:
            await self._give_up(lane, items, outcome, failures, history)
            return
        self.stats.retries += 1
        for item in items:
            item.ticket = ParkingTicket(item.kind, failures, time.time() + wait, history)
        if lane.parked:
            lane.in_flight = 0  # the attempt is over: these records are no longer on the wire
            await self._park(lane)  # the new retry state must be as durable as the old

    async def _attempt(self, items: list[_Item]) -> Outcome:
        app = self.directory.app(items[0].app_id)
        notification = items[0].notification
        if app is None or (notification is None and not app["enabled"]):
            # A disabled app is still told that its consents ended (reason app_disabled).
            return Outcome(False, None, f"app {items[0].app_id} unknown or disabled", True)
        if self.directory.secrets_problem(app["app_id"]) is not None:
            # This worker's key, not the app's endpoint, is at fault: retried, never sent
            # unsigned, not held against the endpoint's circuit. The detail (key ids, where
            # the keys come from) is for operators: the directory logged it.
            return Outcome(False, None, _SECRETS_UNOPENED, True)
        endpoint = self.endpoints.get(app["app_id"], app["webhook_url"])
        # The endpoint's slot first: lanes queueing for a slow endpoint hold no global slot.
        async with endpoint.slots:
            if self.endpoints.paced:  # a coroutine per request saved when there is no limit
                await self.endpoints.pace(endpoint)
            async with self._slots:
                self.stats.requests += 1
                outcome = await self._post(app, items)
        self.endpoints.record(endpoint, outcome)
        self.stats.requested(app["app_id"], outcome.ok)
        return outcome

    async def _post(self, app: AppRecord, items: list[_Item]) -> Outcome:
        notification = items[0].notification
        if notification is not None:
            msg_id, body = notification_event(notification)
            return await self._sender.post_event(app, msg_id, body)
        msg_id, body = head_delta_event(
            [item.delivery for item in items if item.delivery is not None]
        )
        return await self._sender.post_event(app, msg_id, body)

    async def _give_up(
        self,
        lane: _Lane,
        items: list[_Item],
        outcome: Outcome,
        failures: int,
        history: tuple[Attempt, ...],
    ) -> None:
        reason = f"{outcome.reason} after {failures} attempt(s): {outcome.body_excerpt[:200]}"
        extra = {
            "attempts": str(failures),
            "history": json.dumps([attempt.as_json() for attempt in history]),
            "consent_id": lane.consent_id,
            "app_id": items[0].app_id,
        }
        for item in items:
            source = self._topics.deliveries if item.delivery else self._topics.notifications
            letter = DeadLetter(
                topic=source,
                partition=item.tp.partition,
                offset=item.offset,
                key=lane.consent_id.encode(),
                value=item.raw,
                reason=reason,
                stage="delivery",
                extra=extra | _where(item),
            )
            await self._send_dead_letter(letter)
        self._finish(lane, items, dead_lettered=True)

    def _finish(
        self,
        lane: _Lane,
        items: list[_Item],
        *,
        dropped: bool = False,
        dead_lettered: bool = False,
    ) -> None:
        for item in items:
            if lane.queue and lane.queue[0] is item:
                lane.queue.popleft()
            self._release(item)
        lane.finished = items[-1].order
        last = items[-1].delivery
        if dropped:
            self.stats.dropped_stopped_consent += len(items)
        elif dead_lettered:
            self.stats.finished(items[0].app_id, items[0].kind, "dead_lettered", len(items))
        elif last is None:
            page = items[-1].page
            if page is not None and page.last:
                self._handovers[lane.consent_id] = _Handover(page.epoch, page.position)
                self.stats.snapshots_delivered += 1
                self.status.snapshot_delivered(lane.consent_id, items[0].app_id, page.epoch)
                lane.changed.set()
            self.stats.notifications_delivered += len(items)
            self.stats.finished(items[0].app_id, "notification", "delivered", len(items))
        else:
            self.stats.deltas_delivered += len(items)
            self.stats.finished(last["app_id"], "delta", "delivered", len(items))
            self.stats.latency.observe_since_ms(
                (i.delivery["occurred_at_ms"] for i in items if i.delivery), time.time()
            )
            self.stats.last_sequence[lane.consent_id] = last["sequence"]
            self.status.delivered(lane.consent_id, last["app_id"], last["sequence"])
        self._wake_reader()

    def _release(self, item: _Item) -> None:
        """The record's current location is no longer needed: its offset may be committed."""
        if item.reread:
            # Not tracked: the lane's pin holds the retry partition's commit.
            item.reread = False
            self._reread_held -= 1
            return
        tracker = self._trackers.get(item.tp)
        if tracker is not None:  # None: its partition was revoked, the offset is not ours
            tracker.done(item.offset)

    # -- parking ------------------------------------------------------------------------------

    async def _park(self, lane: _Lane) -> None:
        """Copy the lane's records whose stored retry state is stale to the retry topic."""
        lane.parked = True
        stale = [
            item
            for item in list(lane.queue)[lane.in_flight :]
            if not item.parking and item.stored is not item.ticket
        ]
        if not stale:
            return
        # Marked before sending: the copy may be read back before the acks are.
        for item in stale:
            item.parking, item.copied = True, item.ticket
        partition = partition_for_consent(lane.consent_id, self._settings.partitions)
        try:
            acks = [
                await self._producer.send(
                    self._topics.deliveries_retry,
                    item.raw,
                    key=lane.consent_id.encode(),
                    partition=partition,
                    headers=_copy_headers(item),
                )
                for item in stale
            ]
            await asyncio.gather(*acks)
        except KafkaError as error:
            for item in stale:
                item.parking, item.copied = False, None
            log.warning("cannot park consent %s (retried): %s", lane.consent_id, error)
            return
        self.stats.parked += len(stale)

    # -- spilling ---------------------------------------------------------------------------------

    # Parked records are durable on the retry topic, so past delivery_max_parked held in memory
    # a waiting parked lane is *spilled*: its records leave memory and their offsets are marked
    # done, except the lane's earliest, its *pin*, which keeps the retry partition's commit
    # before all of them (a restart reads them again). Copies of its later records join the
    # spill as they come back. When the lane is due (its retry time passed and its endpoint
    # takes requests again, or its consent stopped), its retry partition is read again from
    # the pin (a *rewind*): the lane takes back its own records, newest copy of each, nothing
    # it finished already, and delivers nothing before the rewind ends, since copies come back
    # in the order they were written, not in the lane's. The pin is let go when the lane empties.

    async def _manage_spills(self) -> None:
        in_memory = self._parked_in_memory()
        if in_memory >= self._settings.delivery_max_parked:
            self._want_spills(in_memory - int(self._settings.delivery_max_parked * _SPILL_TO))
        if self._rewinds:
            await self._end_rewinds()
        if self._spilled and time.monotonic() >= self._reloads_checked + _RELOAD_CHECK_S:
            self._reloads_checked = time.monotonic()
            await self._start_reloads()

    def _want_spills(self, excess: int) -> None:
        """Ask the largest spillable lanes to spill, ``excess`` records in all (or more)."""
        lanes = sorted(self._lanes.values(), key=lambda lane: len(lane.queue), reverse=True)
        excess -= sum(len(lane.queue) for lane in lanes if lane.spill_wanted)
        for lane in lanes:
            if excess <= 0:
                return
            if not lane.spill_wanted and self._spillable(lane):
                lane.spill_wanted = True
                lane.changed.set()  # the lane's own task spills it, between two attempts
                excess -= len(lane.queue)

    def _spillable(self, lane: _Lane) -> bool:
        """A parked lane waiting, whose every record's latest state is on the retry topic."""
        if not lane.parked or not lane.queue or lane.in_flight or lane.spill or lane.reloading:
            return False
        retry = self._retry_tp(lane.partition)
        if any(i.tp != retry or i.parking or i.stored is not i.ticket for i in lane.queue):
            return False
        head = lane.queue[0]
        return self._waiting(head.app_id, head.ticket.not_before)

    def _waiting(self, app_id: str, not_before: float) -> bool:
        """Whether a lane's head is not due: its retry time is ahead, or its endpoint is
        disabled or its circuit open (asked without becoming the circuit's probe)."""
        if not_before > time.time():
            return True
        endpoint = self._endpoint(app_id)
        return endpoint is not None and self.endpoints.refusing(endpoint)

    def _spill(self, lane: _Lane) -> None:
        lane.spill_wanted = False
        if not self._spillable(lane):
            return
        if lane.pin is None:
            lane.pin = min(item.offset for item in lane.queue)
        for item in lane.queue:
            if item.reread or item.offset != lane.pin:  # the pin's offset stays open
                self._release(item)
        head = lane.queue[0]
        lane.spill = _Spill(len(lane.queue), head.ticket.not_before, head.app_id)
        self.stats.spilled += len(lane.queue)
        self._spilled.add(lane.consent_id)
        lane.queue.clear()
        self._wake_reader()

    def _unpin(self, lane: _Lane) -> None:
        if lane.pin is None:
            return
        tracker = self._trackers.get(self._retry_tp(lane.partition))
        if tracker is not None:
            tracker.done(lane.pin)
        lane.pin = None

    def _retry_tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self._topics.deliveries_retry, partition)

    async def _start_reloads(self) -> None:
        """Rewind the retry partitions of spilled lanes that are due, as memory allows.

        Stopped consents first (their deltas are only to be dropped, their removal told),
        then by retry time. A lane is read back if its records fit under the bound with what
        is in memory, or if nothing parked is in memory: a lane larger than the bound must
        come back some time.
        """
        assigned = self._consumer.assignment()
        busy = {tp.partition for tp in self._rewinds} | self._loading
        due: list[tuple[bool, float, _Lane, _Spill]] = []
        for consent_id in list(self._spilled):
            lane = self._lanes.get(consent_id)
            if lane is None or lane.spill is None:
                self._spilled.discard(consent_id)
                continue
            spill = lane.spill
            stopped = self.directory.is_stopped(consent_id)
            if lane.partition not in busy and (
                stopped or not self._waiting(spill.app_id, spill.not_before)
            ):
                due.append((not stopped, spill.not_before, lane, spill))
        in_memory = self._parked_in_memory()
        chosen: dict[int, list[_Lane]] = {}
        for _, _, lane, spill in sorted(due, key=lambda entry: entry[:2]):
            if self._retry_tp(lane.partition) not in assigned:
                continue
            over = in_memory + spill.records - self._settings.delivery_max_parked
            if over > 0 and in_memory > 0:
                # Make room: waiting lanes give way to a due one (they come back in turn),
                # or a stopped consent's records would never be let go.
                self._want_spills(over)
                break
            chosen.setdefault(lane.partition, []).append(lane)
            in_memory += spill.records
        for partition, lanes in chosen.items():
            tp = self._retry_tp(partition)
            self._rewinds[tp] = await self._consumer.position(tp)
            for lane in lanes:
                self.stats.reloaded += lane.spill.records if lane.spill is not None else 0
                lane.spill, lane.reloading = None, True
                self._spilled.discard(lane.consent_id)
            self._consumer.seek(tp, min(lane.pin or 0 for lane in lanes))

    async def _end_rewinds(self) -> None:
        """Let the lanes of a rewound partition deliver once it is read back to its end."""
        assigned = self._consumer.assignment()
        for tp, end in list(self._rewinds.items()):
            if tp in assigned and await self._consumer.position(tp) < end:
                continue
            del self._rewinds[tp]
            for lane in list(self._lanes.values()):
                if lane.reloading and lane.partition == tp.partition:
                    lane.reloading = False
                    lane.changed.set()
                    self._lane(lane.consent_id, lane.partition)  # a task to drive it

    def _reread(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]
    ) -> Awaitable[None] | None:
        """A retry record read again in a rewind: taken back by a reloading lane, else
        skipped (it was handled when first read)."""
        lane = self._lanes.get(record.key.decode()) if record.key else None
        if lane is None or not lane.reloading:
            return None
        return self._take_back(tp, record, lane)

    async def _take_back(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], lane: _Lane
    ) -> None:
        item = await self._decode(tp, record, reread=True)
        if item is None or (lane.finished is not None and item.order <= lane.finished):
            return  # undecodable (dead-lettered before), or a copy of a record finished already
        item.reread = True
        item.stored = item.ticket
        known = lane.find(item.identity)
        if known is None:
            lane.insert(item)
            self._reread_held += 1
        elif known.reread and item.offset > known.offset:
            # A later copy of a record this rewind brought back: its state is newer.
            known.tp, known.offset, known.raw = item.tp, item.offset, item.raw
            known.ticket = known.stored = item.ticket
        # Otherwise memory holds a newer state of it: read after the spill, or being copied.

    # -- failures -----------------------------------------------------------------------------

    def _log_failure(self, lane: _Lane, items: list[_Item], outcome: Outcome, attempt: int) -> None:
        self.stats.failures += 1
        app_id = items[0].app_id
        self.status.failed(lane.consent_id, app_id, outcome)
        app = self.directory.app(app_id)
        first, last = items[0], items[-1]
        what = (
            f"sequences {first.delivery['sequence']}-{last.delivery['sequence']}"
            if first.delivery is not None and last.delivery is not None
            else f"event {first.identity}"
        )
        log.warning(
            "delivery failed: consent %s app %s endpoint %s %s attempt %d: %s",
            lane.consent_id,
            app_id,
            app["webhook_url"] if app else "?",
            what,
            attempt,
            outcome.reason,
            extra={"consent_id": lane.consent_id, "app_id": app_id, "attempt": attempt},
        )

    def _app_changed(self, app: AppRecord) -> None:
        self.endpoints.get(app["app_id"], app["webhook_url"])

    def _endpoint(self, app_id: str) -> Endpoint | None:
        """The app's endpoint at its current URL; None for an app not known (yet)."""
        app = self.directory.app(app_id)
        return None if app is None else self.endpoints.get(app_id, app["webhook_url"])

    def _endpoint_is_disabled(self, app_id: str) -> bool:
        endpoint = self._endpoint(app_id)
        return endpoint is not None and endpoint.disabled

    def _endpoint_disabled(self, endpoint: Endpoint) -> None:
        self.stats.endpoints_disabled += 1
        for lane in self._lanes.values():
            if lane.app_id == endpoint.app_id:
                self.status.endpoint_disabled(
                    lane.consent_id, endpoint.app_id, endpoint.disabled_reason or ""
                )

    async def _dead_letter_record(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], reason: str
    ) -> None:
        letter = DeadLetter(
            topic=tp.topic,
            partition=tp.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            reason=reason,
            stage="delivery",
        )
        await self._send_dead_letter(letter)
        tracker = self._trackers.get(tp)
        if tracker is not None:
            tracker.done(record.offset)

    async def _send_dead_letter(self, letter: DeadLetter) -> None:
        await self._producer.send_and_wait(
            self._topics.dead_letters, letter.value, key=letter.key, headers=letter.headers()
        )
        self.stats.dead_lettered += 1
        log.error(
            "dead-lettered %s[%d]@%d: %s",
            letter.topic,
            letter.partition,
            letter.offset,
            letter.reason,
            extra={"topic": letter.topic, "partition": letter.partition, "offset": letter.offset},
        )

    # -- revocation, commits, rebalances --------------------------------------------------------

    def _drop_lane(self, consent_id: str) -> None:
        """A consent was revoked or expired: what waits in its lane is not delivered."""
        lane = self._lanes.get(consent_id)
        if lane is None:
            return
        # The request on the wire finishes (or is dropped) in _deliver; copies on their way
        # to the retry topic are dropped when they come back. Notifications stay: the app
        # must still hear that the consent ended.
        kept = [lane.queue.popleft() for _ in range(min(lane.in_flight, len(lane.queue)))]
        for item in lane.queue:
            if not item.carries_data or item.parking:
                kept.append(item)
            else:
                self._release(item)
                self.stats.dropped_stopped_consent += 1
        lane.queue = deque(kept)
        lane.changed.set()
        self._wake_reader()

    def _wake_reader(self) -> None:
        # Called as records finish: no bound summed here, the reader checks them on waking.
        self._capacity.set()

    async def _commit_loop(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(_COMMIT_INTERVAL_S)
            await self._commit()
            rounds += 1
            if rounds % _STATUS_EVERY == 0:
                await self.status.flush(self._producer)

    async def _commit(self, only: Iterable[TopicPartition] | None = None) -> None:
        wanted = None if only is None else set(only)
        offsets = {}
        for tp, tracker in self._trackers.items():
            if wanted is not None and tp not in wanted:
                continue
            committable = tracker.take_committable()
            if committable is not None:
                offsets[tp] = committable
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as error:
            log.warning("delivery commit skipped after a rebalance: %s", error)

    async def _cancel_lanes(self, lanes: list[_Lane]) -> None:
        tasks = [lane.task for lane in lanes if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _resume_loaded(self) -> None:
        """Resume the deliveries of partitions whose retry records are read to the end."""
        for partition in list(self._loading):
            retry = TopicPartition(self._topics.deliveries_retry, partition)
            highwater = self._consumer.highwater(retry)
            if highwater is None or await self._consumer.position(retry) < highwater:
                continue
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

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Hold new partitions' deliveries until their parked records are back in the lanes.

        Paused before the first ``await``: aiokafka may fetch before this listener returns,
        and what it fetched is dropped by :meth:`run` and read again on resume.
        """
        sources = [tp for tp in assigned if tp.topic != self._topics.deliveries_retry]
        self._consumer.pause(*sources)
        self._loading.update(
            tp.partition for tp in assigned if tp.topic == self._topics.deliveries_retry
        )
        for tp in sources:
            if tp.partition not in self._loading:
                self._consumer.resume(tp)  # no retry partition of that number here

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Stop the lanes of revoked partitions; their new owner delivers what was not done."""
        numbers = {tp.partition for tp in revoked}
        lanes = [lane for lane in self._lanes.values() if lane.partition in numbers]
        await self._cancel_lanes(lanes)
        await self._commit(revoked)
        for lane in lanes:
            self._lanes.pop(lane.consent_id, None)
            self._spilled.discard(lane.consent_id)
        for tp in revoked:
            self._trackers.pop(tp, None)
            self._rewinds.pop(tp, None)
        self._reread_held = sum(
            1 for lane in self._lanes.values() for item in lane.queue if item.reread
        )
        self._loading -= numbers
        self._wake_reader()


def _received(
    tp: TopicPartition, record: ConsumerRecord[bytes, bytes], ticket: ParkingTicket
) -> _Item:
    """A lane item for a record as read, its delta or notification still to be set."""
    item = _Item(tp, record.offset, record.value, ticket=ticket)
    if record.headers:
        # A replayed record that fails again must stay tied to the letter it came from.
        item.replayed_from = dict(record.headers).get(_REPLAYED_FROM)
    return item


def _where(item: _Item) -> dict[str, str]:
    where = {"stored_at": f"{item.tp.topic}[{item.tp.partition}]@{item.offset}"}
    if item.replayed_from is not None:
        where["replayed_from"] = item.replayed_from.decode(errors="replace")
    return where


def _copy_headers(item: _Item) -> list[tuple[str, bytes]]:
    headers = item.ticket.headers()
    if item.replayed_from is not None:
        headers.append((_REPLAYED_FROM, item.replayed_from))
    return headers


def _count(entry: tuple[str, int]) -> int:
    return -entry[1]  # most first


def _report_crash(task: asyncio.Task[None]) -> None:
    """A lane that dies of a bug must not die silently: its offsets would never commit."""
    if not task.cancelled() and task.exception() is not None:
        log.error("delivery lane %s crashed", task.get_name(), exc_info=task.exception())


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: DeliveryWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._worker.on_assigned(assigned)
