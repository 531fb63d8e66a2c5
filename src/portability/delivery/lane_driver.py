"""The lane driver: one task per non-empty lane delivers its records in order.

A lane's task posts its head (coalescing what waits, up to ``delivery_max_batch`` deltas and
``delivery_max_batch_bytes``; a notification alone), waits before a retry, parks the lane
when the wait is long, spills it when asked, and finishes what each attempt settled:
delivered, dropped for a stopped consent, or dead-lettered. The task ends when the lane
empties, and the lane leaves the book with it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque

from portability.delivery.attempts import Attempts
from portability.delivery.dead_lettering import DeadLettering
from portability.delivery.directory import Directory
from portability.delivery.lane_book import LaneBook
from portability.delivery.lanes import Item, Lane
from portability.delivery.parker import Parker
from portability.delivery.parking import Attempt, ParkingTicket, now_utc
from portability.delivery.retry_schedule import RetrySchedule
from portability.delivery.snapshot_gate import SnapshotGate
from portability.delivery.spilling import Spiller
from portability.delivery.stats import DeliveryStats
from portability.delivery.status import StatusBoard
from portability.settings import Settings

__all__ = ["LaneDriver"]

# The role's logger, whichever part of the worker writes: operators filter its lines by one name.
log = logging.getLogger("portability.delivery.worker")

_IDLE_RECHECK_S = 5.0  # a waiting lane re-checks its endpoint at least this often


class LaneDriver:
    """Drives each lane with a task of its own, and drops what a stopped consent owes."""

    def __init__(
        self,
        settings: Settings,
        directory: Directory,
        book: LaneBook,
        *,
        gate: SnapshotGate,
        attempts: Attempts,
        dead_letters: DeadLettering,
        parker: Parker,
        spiller: Spiller,
        stats: DeliveryStats,
        status: StatusBoard,
        stopping: asyncio.Event,
    ) -> None:
        self._settings = settings
        self._directory = directory
        self._book = book
        # Bound once: each request, the per-delta path's unit, calls these.
        self._lanes = book.lanes
        self._release = book.release
        self._wake_reader = book.wake_reader
        self._held = gate.held
        self._attempt = attempts.attempt
        self._endpoint = attempts.endpoint
        self._endpoints = attempts.endpoints
        self._gate = gate
        self._attempts = attempts
        self._dead_letters = dead_letters
        self._park = parker.park
        self._spill = spiller.spill
        self._stats = stats
        self._status = status
        self._stopping = stopping
        self._schedule = RetrySchedule(
            settings.delivery_retry_schedule_s, settings.delivery_retry_jitter
        )

    def lane(self, consent_id: str, partition: int) -> Lane:
        """The consent's lane, made if need be, with a task driving it."""
        lane = self._lanes.get(consent_id)
        if lane is None:
            lane = self._lanes[consent_id] = Lane(consent_id, partition)
        if lane.task is None:
            lane.task = asyncio.create_task(self._drive(lane), name=f"lane-{consent_id}")
            lane.task.add_done_callback(_report_crash)
        return lane

    async def _drive(self, lane: Lane) -> None:
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
                self._book.unpin(lane)
                del self._lanes[lane.consent_id]

    async def _ready_in(self, lane: Lane) -> float:
        """Seconds before the lane's head may be attempted (0: now), parking if that is long."""
        if await self._held(lane):
            return _IDLE_RECHECK_S  # woken when a page arrives; re-checked now and then
        if not lane.queue:
            return 0.0
        head = lane.queue[0]
        if head.parking:
            return _IDLE_RECHECK_S  # woken when the copy comes back
        if head.carries_data and self._directory.is_stopped(lane.consent_id):
            return 0.0  # dropped at once by _deliver
        wait = head.ticket.not_before - time.time()
        endpoint = self._endpoint(head.app_id)
        if wait <= 0 and endpoint is not None:
            # Asked only when the head is due: in a half-open circuit the asker is the probe.
            wait = self._endpoints.wait_s(endpoint)
        if wait >= self._settings.delivery_park_after_s:
            # Parks the lane, or, parked already, stores the retry state its records got
            # since (a disabled endpoint's attempts leave it to here). A copy coming back
            # wakes the lane.
            await self._park(lane)
        return max(wait, 0.0)

    async def _wait(self, lane: Lane, seconds: float) -> None:
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

    def _next_request(self, lane: Lane, taken: list[Item] | None = None) -> list[Item]:
        """The lane's head: a notification alone, or the deltas before the next notification.

        With ``taken`` (the deltas of a request not sent yet, still at the head of the lane),
        those and the deltas that came in behind them since, by the same rules.
        """
        head = lane.queue[0]
        if head.notification is not None:
            return [head]
        items: list[Item] = taken if taken is not None else []
        size = sum(len(item.raw) for item in items)
        epoch, most = head.epoch, self._settings.delivery_max_batch
        for item in itertools.islice(lane.queue, len(items), None):
            delivery = item.delivery
            if (
                delivery is None
                or item.parking
                or delivery["snapshot_epoch"] != epoch  # a newer epoch waits for its snapshot
                or len(items) >= most
            ):
                break
            size += len(item.raw)
            if items and size > self._settings.delivery_max_batch_bytes:
                break
            items.append(item)
        return items

    async def _deliver(self, lane: Lane, items: list[Item]) -> None:
        """One attempt at the head of the lane, and what follows from its outcome."""
        if items[0].carries_data and self._directory.is_stopped(lane.consent_id):
            self._finish(lane, items, dropped=True)
            return
        outcome = await self._attempt(items, lambda: self._fill(lane, items))
        if outcome.ok:
            self._finish(lane, items)
            return
        failures = items[0].ticket.failures + 1
        self._attempts.log_failure(lane, items, outcome, failures)
        if self._attempts.endpoint_is_disabled(items[0].app_id):
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
            await self._dead_letters.give_up(lane, items, outcome, failures, history)
            self._finish(lane, items, dead_lettered=True)
            return
        self._stats.retries += 1
        for item in items:
            item.ticket = ParkingTicket(item.kind, failures, time.time() + wait, history)
        if lane.parked:
            lane.in_flight = 0  # the attempt is over: these records are no longer on the wire
            await self._park(lane)  # the new retry state must be as durable as the old

    def _fill(self, lane: Lane, items: list[Item]) -> None:
        """Once the request holds its slots, what came into the lane while it waited for them
        goes too: under load, requests fill up instead of queueing behind each other."""
        if items[0].notification is None and len(lane.queue) > len(items):
            self._next_request(lane, items)
            lane.in_flight = len(items)

    def _finish(
        self,
        lane: Lane,
        items: list[Item],
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
            self._stats.dropped_stopped_consent += len(items)
        elif dead_lettered:
            self._stats.finished(items[0].app_id, items[0].kind, "dead_lettered", len(items))
        elif last is None:
            page = items[-1].page
            if page is not None and page.last:
                self._gate.delivered(lane, page, items[0].app_id)
            self._stats.notifications_delivered += len(items)
            self._stats.finished(items[0].app_id, "notification", "delivered", len(items))
        else:
            self._stats.deltas_delivered += len(items)
            self._stats.finished(last["app_id"], "delta", "delivered", len(items))
            self._stats.latency.observe_since_ms(
                (i.delivery["occurred_at_ms"] for i in items if i.delivery), time.time()
            )
            self._stats.last_sequence[lane.consent_id] = last["sequence"]
            self._status.delivered(lane.consent_id, last["app_id"], last["sequence"])
        self._wake_reader()

    def drop(self, consent_id: str) -> None:
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
                self._stats.dropped_stopped_consent += 1
        lane.queue = deque(kept)
        lane.changed.set()
        self._wake_reader()


def _report_crash(task: asyncio.Task[None]) -> None:
    """A lane that dies of a bug must not die silently: its offsets would never commit."""
    if not task.cancelled() and task.exception() is not None:
        log.error("delivery lane %s crashed", task.get_name(), exc_info=task.exception())
