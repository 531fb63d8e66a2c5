"""The lane book: the per-consent and per-partition state every part of the delivery worker shares.

The worker's parts (intake, the lane driver, parking, spilling, partition handling) each own
their own decisions but act on one set of books: the lanes by consent, the offsets held per
partition, which partitions are loading their parked records or being read back, and which
lanes are spilled. Keeping them in one place gives one answer to "how much is held", which
the reading bounds (``delivery_max_in_hand``, ``delivery_max_parked``) and the metrics ask.

The collections are handed out as attributes and never replaced, so a part may keep a
reference to one and skip a lookup per record on the hot path.
"""

from __future__ import annotations

import asyncio

from aiokafka import TopicPartition

from portability.delivery.lanes import Item, Lane
from portability.delivery.offsets import OffsetTracker
from portability.settings import Settings

__all__ = ["LaneBook"]


class LaneBook:
    """Lanes by consent, offsets held by partition, and the counts the bounds read."""

    def __init__(self, settings: Settings, retry_topic: str) -> None:
        self._settings = settings
        self.retry_topic = retry_topic
        self.lanes: dict[str, Lane] = {}
        self.trackers: dict[TopicPartition, OffsetTracker] = {}
        self.loading: set[int] = set()  # partitions whose retry records are being read
        self.spilled: set[str] = set()  # consents whose lanes are spilled
        self.rewinds: dict[TopicPartition, int] = {}  # retry partition -> end of the re-read
        self.reread_held = 0  # records read back in rewinds and not finished (not tracked)
        self.capacity = asyncio.Event()  # set as records finish: the reader may read more

    @property
    def pending(self) -> int:
        """Records received and not yet finished (parked ones count until they are done)."""
        return sum(tracker.outstanding for tracker in self.trackers.values())

    @property
    def in_hand(self) -> int:
        """Records read from deliveries or notifications and not finished: bounded by
        ``delivery_max_in_hand``. A parked record counts here until its copy is read back."""
        return self._outstanding(parked=False)

    @property
    def reading_paused(self) -> str | None:
        """Why new deliveries are not read now: ``in_hand`` or ``parked`` (a bound is
        reached; see :meth:`DeliveryWorker.run`); None while they are."""
        if self.in_hand >= self._settings.delivery_max_in_hand:
            return "in_hand"
        if self.parked_in_memory() >= self._settings.delivery_max_parked:
            return "parked"
        return None

    def parked_in_memory(self) -> int:
        """Parked records held in memory: those tracked on the retry topic, but the pins of
        spilled lanes (their records are out), and those read back in rewinds (untracked)."""
        return self._outstanding(parked=True) - len(self.spilled) + self.reread_held

    def _outstanding(self, *, parked: bool) -> int:
        retry = self.retry_topic
        return sum(
            tracker.outstanding
            for tp, tracker in self.trackers.items()
            if (tp.topic == retry) == parked
        )

    @property
    def parked(self) -> int:
        """Records waiting in parked lanes."""
        return sum(
            len(lane.queue) + (lane.spill.records if lane.spill is not None else 0)
            for lane in self.lanes.values()
            if lane.parked
        )

    @property
    def spilled_records(self) -> int:
        """Parked records out of memory (spilled lanes), to be read back when due."""
        return sum(lane.spill.records for lane in self.lanes.values() if lane.spill is not None)

    @property
    def retrying(self) -> int:
        """Consents whose next request is a retry (waiting in memory or parked)."""
        lanes = self.lanes.values()
        return sum(
            1
            for lane in lanes
            if lane.spill is not None or (lane.queue and lane.queue[0].ticket.failures > 0)
        )

    def release(self, item: Item) -> None:
        """The record's current location is no longer needed: its offset may be committed."""
        if item.reread:
            # Not tracked: the lane's pin holds the retry partition's commit.
            item.reread = False
            self.reread_held -= 1
            return
        tracker = self.trackers.get(item.tp)
        if tracker is not None:  # None: its partition was revoked, the offset is not ours
            tracker.done(item.offset)

    def wake_reader(self) -> None:
        # Called as records finish: no bound summed here, the reader checks them on waking.
        self.capacity.set()

    def retry_tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.retry_topic, partition)

    def unpin(self, lane: Lane) -> None:
        """Let the lane's pin go: the retry partition may commit past its records."""
        if lane.pin is None:
            return
        tracker = self.trackers.get(self.retry_tp(lane.partition))
        if tracker is not None:
            tracker.done(lane.pin)
        lane.pin = None

    def forget(self, revoked: set[TopicPartition], lanes: list[Lane]) -> None:
        """Drop revoked partitions and their lanes (whose tasks are stopped): not ours now."""
        for lane in lanes:
            self.lanes.pop(lane.consent_id, None)
            self.spilled.discard(lane.consent_id)
        for tp in revoked:
            self.trackers.pop(tp, None)
            self.rewinds.pop(tp, None)
        self.reread_held = sum(
            1 for lane in self.lanes.values() for item in lane.queue if item.reread
        )
        self.loading -= {tp.partition for tp in revoked}
        self.wake_reader()
