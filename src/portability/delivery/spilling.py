"""Spilling: parked lanes that wait leave memory, and are read back from the retry topic when due.

Parked records are durable on the retry topic, so past ``delivery_max_parked`` held in memory
a waiting parked lane is *spilled*: its records leave memory and their offsets are marked
done, except the lane's earliest, its *pin*, which keeps the retry partition's commit before
all of them (a restart reads them again). Copies of its later records join the spill as they
come back. When the lane is due (its retry time passed and its endpoint takes requests again,
or its consent stopped), its retry partition is read again from the pin (a *rewind*): the
lane takes back its own records, newest copy of each, nothing it finished already (see
:meth:`Intake.reread <portability.delivery.intake.Intake>`), and delivers nothing before the
rewind ends, since copies come back in the order they were written, not in the lane's. The
pin is let go when the lane empties.

:class:`Spiller` lets lanes out (each lane's own task spills it, between two attempts);
:class:`Reloader`, run by the reader between two reads, asks for spills and reads lanes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from portability.delivery.attempts import Attempts
from portability.delivery.directory import Directory
from portability.delivery.lane_book import LaneBook
from portability.delivery.lanes import Lane, Spill
from portability.delivery.stats import DeliveryStats

__all__ = ["Reloader", "Spiller"]

_SPILL_TO = 0.5  # spilling parked lanes brings the parked records held down to this share
_RELOAD_CHECK_S = 0.25  # how often spilled lanes are checked for being due


class Spiller:
    """Lets waiting parked lanes out of memory, the largest first."""

    def __init__(self, book: LaneBook, attempts: Attempts, stats: DeliveryStats) -> None:
        self._book = book
        self._attempts = attempts
        self._stats = stats

    def want(self, excess: int) -> None:
        """Ask the largest spillable lanes to spill, ``excess`` records in all (or more)."""
        lanes = sorted(self._book.lanes.values(), key=lambda lane: len(lane.queue), reverse=True)
        excess -= sum(len(lane.queue) for lane in lanes if lane.spill_wanted)
        for lane in lanes:
            if excess <= 0:
                return
            if not lane.spill_wanted and self._spillable(lane):
                lane.spill_wanted = True
                lane.changed.set()  # the lane's own task spills it, between two attempts
                excess -= len(lane.queue)

    def _spillable(self, lane: Lane) -> bool:
        """A parked lane waiting, whose every record's latest state is on the retry topic."""
        if not lane.parked or not lane.queue or lane.in_flight or lane.spill or lane.reloading:
            return False
        retry = self._book.retry_tp(lane.partition)
        if any(i.tp != retry or i.parking or i.stored is not i.ticket for i in lane.queue):
            return False
        head = lane.queue[0]
        return self._attempts.waiting(head.app_id, head.ticket.not_before)

    def spill(self, lane: Lane) -> None:
        lane.spill_wanted = False
        if not self._spillable(lane):
            return
        if lane.pin is None:
            lane.pin = min(item.offset for item in lane.queue)
        for item in lane.queue:
            if item.reread or item.offset != lane.pin:  # the pin's offset stays open
                self._book.release(item)
        head = lane.queue[0]
        lane.spill = Spill(len(lane.queue), head.ticket.not_before, head.app_id)
        self._stats.spilled += len(lane.queue)
        self._book.spilled.add(lane.consent_id)
        lane.queue.clear()
        self._book.wake_reader()


class Reloader:
    """Keeps parked records in memory under the bound, and reads spilled lanes back when due.

    ``drive`` gets a consent's lane with a task driving it (see :meth:`LaneDriver.lane
    <portability.delivery.lane_driver.LaneDriver>`).
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        book: LaneBook,
        spiller: Spiller,
        attempts: Attempts,
        directory: Directory,
        stats: DeliveryStats,
        max_parked: int,
        drive: Callable[[str, int], Lane],
    ) -> None:
        self._consumer = consumer
        self._book = book
        self._spiller = spiller
        self._attempts = attempts
        self._directory = directory
        self._stats = stats
        self._max_parked = max_parked
        self._drive = drive
        self._reloads_checked = 0.0

    async def tend(self) -> None:
        """Between two reads: spill past the bound, end rewinds read back, start due ones."""
        in_memory = self._book.parked_in_memory()
        if in_memory >= self._max_parked:
            self._spiller.want(in_memory - int(self._max_parked * _SPILL_TO))
        if self._book.rewinds:
            await self._end_rewinds()
        if self._book.spilled and time.monotonic() >= self._reloads_checked + _RELOAD_CHECK_S:
            self._reloads_checked = time.monotonic()
            await self._start_reloads()

    async def _start_reloads(self) -> None:
        """Rewind the retry partitions of spilled lanes that are due, as memory allows.

        Stopped consents first (their deltas are only to be dropped, their removal told),
        then by retry time. A lane is read back if its records fit under the bound with what
        is in memory, or if nothing parked is in memory: a lane larger than the bound must
        come back some time.
        """
        book = self._book
        assigned = self._consumer.assignment()
        busy = {tp.partition for tp in book.rewinds} | book.loading
        due: list[tuple[bool, float, Lane, Spill]] = []
        for consent_id in list(book.spilled):
            lane = book.lanes.get(consent_id)
            if lane is None or lane.spill is None:
                book.spilled.discard(consent_id)
                continue
            spill = lane.spill
            stopped = self._directory.is_stopped(consent_id)
            if lane.partition not in busy and (
                stopped or not self._attempts.waiting(spill.app_id, spill.not_before)
            ):
                due.append((not stopped, spill.not_before, lane, spill))
        in_memory = book.parked_in_memory()
        chosen: dict[int, list[Lane]] = {}
        for _, _, lane, spill in sorted(due, key=lambda entry: entry[:2]):
            if book.retry_tp(lane.partition) not in assigned:
                continue
            over = in_memory + spill.records - self._max_parked
            if over > 0 and in_memory > 0:
                # Make room: waiting lanes give way to a due one (they come back in turn),
                # or a stopped consent's records would never be let go.
                self._spiller.want(over)
                break
            chosen.setdefault(lane.partition, []).append(lane)
            in_memory += spill.records
        for partition, lanes in chosen.items():
            tp = book.retry_tp(partition)
            book.rewinds[tp] = await self._consumer.position(tp)
            for lane in lanes:
                self._stats.reloaded += lane.spill.records if lane.spill is not None else 0
                lane.spill, lane.reloading = None, True
                book.spilled.discard(lane.consent_id)
            self._consumer.seek(tp, min(lane.pin or 0 for lane in lanes))

    async def _end_rewinds(self) -> None:
        """Let the lanes of a rewound partition deliver once it is read back to its end."""
        assigned = self._consumer.assignment()
        for tp, end in list(self._book.rewinds.items()):
            if tp in assigned and await self._consumer.position(tp) < end:
                continue
            del self._book.rewinds[tp]
            for lane in list(self._book.lanes.values()):
                if lane.reloading and lane.partition == tp.partition:
                    lane.reloading = False
                    lane.changed.set()
                    self._drive(lane.consent_id, lane.partition)  # a task to drive it
