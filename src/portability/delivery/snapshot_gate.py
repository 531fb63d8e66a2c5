"""The snapshot gate: a consent's deltas wait for its snapshot, and what it holds is dropped.

Snapshot pages (``portability.snapshot``, see :mod:`portability.transfers.snapshots`) come
on the notifications topic and join the consent's lane before the deltas of their epoch. A
delta stamped with a snapshot epoch this worker has not seen delivered is held until the
epoch's last page is delivered (the *hand-over*); then the deltas whose source offset the
snapshot already covers are dropped, and the rest follow. After a restart, a snapshot counts
as delivered when the group's committed offset on ``notifications`` is past its last page
(recorded on the consent by the builder).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from portability.delivery.directory import Directory
from portability.delivery.lane_book import LaneBook
from portability.delivery.lanes import Lane
from portability.delivery.ledger_book import Order
from portability.delivery.stats import DeliveryStats
from portability.delivery.status import StatusBoard
from portability.wire.notifications import SnapshotPage

__all__ = ["SnapshotGate"]

# The role's logger, whichever part of the worker writes: operators filter its lines by one name.
log = logging.getLogger("portability.delivery.worker")

_HANDOVER_ASK_S = 1.0
_PAGE, _DELTA = 0, 1  # the kinds in a lane order (see Item.order)


@dataclass(frozen=True, slots=True)
class _Handover:
    """A snapshot delivered: deltas of source offsets before ``position`` are in it."""

    epoch: int
    position: int


class SnapshotGate:
    """Holds deltas of an epoch until its snapshot is delivered; drops what it holds."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        notifications_topic: str,
        directory: Directory,
        book: LaneBook,
        stats: DeliveryStats,
        status: StatusBoard,
        restored: Mapping[str, tuple[Order, str]],
    ) -> None:
        self._consumer = consumer
        self._restored = restored  # the ledger heads this worker took over (LedgerBook)
        self._notifications_topic = notifications_topic
        self._directory = directory
        self._book = book
        self._stats = stats
        self._status = status
        self._handovers: dict[str, _Handover] = {}  # latest snapshot delivered, per consent
        self._handover_asked: dict[str, float] = {}  # when the committed offset was asked

    @property
    def awaiting(self) -> int:
        """Consents whose head delta waits for a snapshot not delivered yet (as seen here)."""
        waiting = 0
        for lane in self._book.lanes.values():
            head = next((item for item in lane.queue if item.delivery is not None), None)
            known = self._handovers.get(lane.consent_id)
            if head is not None and head.epoch > (0 if known is None else known.epoch):
                waiting += 1
        return waiting

    async def held(self, lane: Lane) -> bool:
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
            self._book.release(head)
            self._stats.dropped_in_snapshot += 1
            self._book.wake_reader()
        return False

    def delivered(self, lane: Lane, page: SnapshotPage, app_id: str) -> None:
        """The snapshot's last page is delivered: the deltas of its epoch may follow."""
        self._handovers[lane.consent_id] = _Handover(page.epoch, page.position)
        self._stats.snapshots_delivered += 1
        self._status.snapshot_delivered(lane.consent_id, app_id, page.epoch)
        lane.changed.set()

    async def _handover(self, lane: Lane) -> _Handover | None:
        """The consent's latest delivered snapshot, as seen here or recorded before a restart."""
        known = self._handovers.get(lane.consent_id) or self._proven(lane.consent_id)
        published = self._directory.published_snapshot(lane.consent_id)
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
        tp = TopicPartition(self._notifications_topic, lane.partition)
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
            self._status.snapshot_delivered(lane.consent_id, lane.queue[0].app_id, epoch)
        return handover

    def _proven(self, consent_id: str) -> _Handover | None:
        """The hand-over the consent's ledger head, as the previous owner recorded it, proves:
        a delta delivered at epoch ``e`` (only after its snapshot), or a page of epoch ``e``
        (only after every delta of earlier epochs).

        The consent record names only the latest snapshot published; without this, a worker
        taking over a consent whose resync (epoch e + 1) was published while deltas of epoch e
        were still to go held those deltas for the snapshot of e, which it cannot see
        delivered any more, and the new snapshot's pages behind them: nothing more reached
        the app. Position 0: what the previous owner dropped as in its snapshot it also
        recorded as done (the head is past it), so nothing is dropped here for it.
        """
        restored = self._restored.get(consent_id)
        if restored is None:
            return None
        epoch, kind, _, _ = restored[0]
        proven = epoch if kind == _DELTA else epoch - 1 if kind == _PAGE else 0
        return _Handover(proven, 0) if proven > 0 else None
