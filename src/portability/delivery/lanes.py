"""What a consent's lane holds: its records in order, and the state of its parking and spill.

Each consent has a lane in the delivery worker: its deltas, snapshot pages and notifications
wait there in the order they must reach the app (:attr:`Item.order`). These are plain data,
shared by every part of the worker (intake puts items in, the lane driver takes them out,
parking and spilling move them to and from the retry topic); the parts that change them live
in the modules named after them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from aiokafka import ConsumerRecord, TopicPartition

from portability.delivery.parking import ParkingTicket, RecordKind
from portability.privacy import is_audience_record_id
from portability.wire.headers import REPLAYED_FROM_HEADER
from portability.wire.notifications import SnapshotPage
from portability.wire.records import DeliveryHead, NotificationRecord

__all__ = ["FRESH", "Item", "Lane", "Spill", "received"]

_AFTER_ALL = 1 << 62  # the epoch part of an order that comes after every delta and page

# The retry state of a record not tried yet; tickets are immutable, so one of each kind serves
# every record (a ticket's identity matters only once it is read from the retry topic).
FRESH: dict[RecordKind, ParkingTicket] = {
    "delivery": ParkingTicket("delivery"),
    "notification": ParkingTicket("notification"),
}


@dataclass(slots=True)
class Item:
    """A delta (``delivery``) or a notification waiting in a lane.

    ``tp``/``offset`` say where the record is durably stored now: its source topic, or the
    retry topic once parked. ``stored`` is the retry state that copy carries.
    """

    tp: TopicPartition
    offset: int
    raw: bytes
    delivery: DeliveryHead | None = None  # a delta is kept as its head: see Intake.decode
    notification: NotificationRecord | None = None
    ticket: ParkingTicket = FRESH["delivery"]
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


def received(
    tp: TopicPartition, record: ConsumerRecord[bytes, bytes], ticket: ParkingTicket
) -> Item:
    """A lane item for a record as read, its delta or notification still to be set."""
    item = Item(tp, record.offset, record.value, ticket=ticket)
    if record.headers:
        # A replayed record that fails again must stay tied to the letter it came from.
        item.replayed_from = dict(record.headers).get(REPLAYED_FROM_HEADER)
    return item


@dataclass(slots=True)
class Spill:
    """What is left in memory of a spilled lane: its records are on the retry topic only."""

    records: int
    not_before: float  # the head's retry time, as in its ticket
    app_id: str


@dataclass(slots=True)
class Lane:
    consent_id: str
    partition: int
    queue: deque[Item] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    in_flight: int = 0  # leading items of the queue in the request being made
    parked: bool = False  # its records live on the retry topic until the lane empties
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # Spilling (see portability.delivery.spilling): the retry offset kept uncommitted for the
    # lane's records while they are out of memory or read back, until the lane empties.
    pin: int | None = None
    spill: Spill | None = None
    spill_wanted: bool = False
    reloading: bool = False  # its records are being read back from the retry topic
    finished: tuple[int, int, int, int] | None = None  # order of the latest record finished

    def insert(self, item: Item) -> None:
        """Add in order: appended as a rule, sorted in when read back from the retry topic."""
        queue, order = self.queue, item.order
        index = len(queue)
        while index > self.in_flight and queue[index - 1].order > order:
            index -= 1
        if index == len(queue):
            queue.append(item)
        else:
            queue.insert(index, item)
        self.changed.set()

    @property
    def app_id(self) -> str | None:
        """The app of its head record (or of its spilled ones); None when it holds none."""
        if self.queue:
            return self.queue[0].app_id
        return self.spill.app_id if self.spill is not None else None

    def find(self, identity: str) -> Item | None:
        return next((item for item in self.queue if item.identity == identity), None)
