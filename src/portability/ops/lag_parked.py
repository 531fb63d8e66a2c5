"""What holds a retry partition: the parked record at its committed offset, and when it is due.

The delivery worker commits a ``deliveries.retry`` partition only up to the oldest parked
record it still owes (see :mod:`portability.delivery.worker`), so that a crash loses none: a
partition standing still there is a consent waiting for its retry, not a stopped consumer.
To tell the two apart, lag reads the record the partition is held at and its ``retry.*``
headers (:class:`~portability.delivery.parking.ParkingTicket`).

That record's own headers are not always the answer. A consent's records are tried in order
and copied to the retry topic together; when its first record fails again, only that one is
copied anew, further on, so the partition may be held at a later record of the same consent
that was never tried (its ticket says 0 failures), waiting behind that newer copy. So the
partition is read on from the held record, and the due time is the one of the latest copy of
the same consent that failed. Reading is bounded (:data:`SCAN_PER_SAMPLE` records a sample)
and goes on where it stopped at the next sample, for as long as the partition is held at the
same offset; a new hold starts again from it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from aiokafka import TopicPartition

from portability.broker import BrokerError
from portability.broker.inspector import Inspector, RecordHead
from portability.delivery.parking import ParkingTicket
from portability.ops.lag_rules import ParkedHold

__all__ = ["SCAN_PER_SAMPLE", "ParkedReader"]

log = logging.getLogger(__name__)

# Records read a sample from one held partition. The first sample of a hold reads this many;
# later ones only what is new, so a long wait costs nothing once the scan reached the end.
SCAN_PER_SAMPLE = 2_000


@dataclass(slots=True)
class _Scan:
    """What was read of one held partition so far."""

    held: int  # the offset the partition is held at (the committed offset, or the log start)
    head: RecordHead | None = None  # the first record at or after it, once read
    latest: ParkingTicket | None = None  # the latest failed copy of the head's consent
    next: int = 0  # where reading goes on


class ParkedReader:
    """Reads the holds of the partitions of ``topics``, keeping each scan between samples."""

    def __init__(self, topics: Collection[str], per_sample: int = SCAN_PER_SAMPLE) -> None:
        self.topics = frozenset(topics)
        self._per_sample = per_sample
        self._scans: dict[tuple[str, TopicPartition], _Scan] = {}

    async def read(
        self, inspector: Inspector, wanted: Mapping[tuple[str, TopicPartition], tuple[int, int]]
    ) -> dict[tuple[str, TopicPartition], ParkedHold]:
        """The hold of each (group, partition) in ``wanted``, which maps it to the offset it
        is held at and the partition's end; left out where that record is no parked copy."""
        for key in [k for k in self._scans if k not in wanted]:
            del self._scans[key]  # caught up, or no longer read: a new hold reads afresh
        holds: dict[tuple[str, TopicPartition], ParkedHold] = {}
        for key, (held, end) in wanted.items():
            scan = self._scans.get(key)
            if scan is None or scan.held != held:
                scan = self._scans[key] = _Scan(held=held, next=held)
            await self._read_on(inspector, key[1], scan, end)
            hold = _hold(scan)
            if hold is not None:
                holds[key] = hold
        return holds

    async def _read_on(
        self, inspector: Inspector, tp: TopicPartition, scan: _Scan, end: int
    ) -> None:
        if scan.head is not None and _hold(scan) is None:
            return  # not held at a parked copy: nothing further to learn
        try:
            records = await inspector.records(tp, scan.next, end, self._per_sample)
        except BrokerError as error:
            # Reading on is an extra: a slow fetch must not cost the whole sample. The hold
            # stays as read so far, and the next sample tries again.
            log.info(
                "lag: reading %s from offset %d for its parked records: %s", tp, scan.next, error
            )
            return
        if not records:
            return
        if scan.head is None:
            scan.head = records[0]
        for record in records:
            if record.key != scan.head.key:
                continue
            ticket = _ticket(record)
            if ticket is not None and ticket.failures > 0:
                scan.latest = ticket
        scan.next = records[-1].offset + 1


def _ticket(record: RecordHead) -> ParkingTicket | None:
    """The record's retry state; None for a record without (or with broken) retry headers:
    whatever a producer wrote there must not fail the lag sample."""
    try:
        return ParkingTicket.from_headers(record.headers)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _hold(scan: _Scan) -> ParkedHold | None:
    """The hold as read so far; None when the held record is no parked copy (no retry
    headers, or not keyed by a consent): then the ordinary rules judge the partition."""
    head = scan.head
    if head is None or head.key is None:
        return None
    own = _ticket(head)
    if own is None:
        return None
    consent_id = head.key.decode(errors="replace")
    state = scan.latest
    if state is None:
        # Not tried since it was parked behind others (0 failures): its wait is not known.
        return ParkedHold(head.offset, consent_id, own.failures, None)
    # A failed attempt with no retry time: the endpoint was disabled (the worker holds the
    # consent's records for the app's new URL instead of scheduling another attempt).
    disabled = state.not_before <= 0
    return ParkedHold(
        head.offset,
        consent_id,
        state.failures,
        None if disabled else state.not_before,
        endpoint_disabled=disabled,
    )
