"""Reading a consent's deliveries back from the ``deliveries`` topic, for a replay.

A replay reads the consent's partition with a reader outside any group (the delivery
worker's offsets are untouched), from its beginning (or the first offset at ``since``) up to
the high watermark seen when it starts. :func:`consent_records` keeps the consent's records
without decoding anything (comparing the key, and the timestamp with ``since``);
:class:`ReplayRange` then judges each decoded delivery as the worker would have: from the
requested sequence or time, and not held by the consent's snapshot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from portability.delivery.errors import ReplayFailedError
from portability.privacy import is_audience_record_id
from portability.wire.records import DeliveryRecord, to_millis

__all__ = ["ReplayRange", "consent_records"]

_POLL_MS = 200
_MAX_RECORDS = 500  # per poll: bounds what one read holds in memory
_MAX_EMPTY_POLLS = 50  # ~10 s without a record below the stop offset: the broker is stuck


@dataclass(frozen=True, slots=True)
class ReplayRange:
    """What one replay looks for: a consent's records from a sequence or a time."""

    consent_id: str
    from_sequence: int | None
    since: datetime | None
    # The consent's latest snapshot: its epoch, and its position once published (else None).
    snapshot_epoch: int = 0
    snapshot_position: int | None = None

    @property
    def since_ms(self) -> int | None:
        return None if self.since is None else to_millis(self.since)

    def wants(self, delivery: DeliveryRecord) -> bool:
        if delivery["consent_id"] != self.consent_id:
            return False
        if self.from_sequence is not None and delivery["sequence"] < self.from_sequence:
            return False
        if not self._after_snapshot(delivery):
            return False
        return self.since is None or delivery["matched_at"] >= self.since

    def _after_snapshot(self, delivery: DeliveryRecord) -> bool:
        """Not held by the consent's snapshot, nor waiting for one, as the worker decides."""
        if self.snapshot_epoch == 0 or is_audience_record_id(delivery["change"]["record_id"]):
            return True
        if self.snapshot_position is None:
            # The latest snapshot is not published: its epoch's deltas wait for it.
            return delivery.get("snapshot_epoch", 0) < self.snapshot_epoch
        source_offset = delivery.get("source_offset", -1)
        return source_offset < 0 or source_offset >= self.snapshot_position


async def consent_records(
    reader: AIOKafkaConsumer, tp: TopicPartition, wanted: ReplayRange
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """The consent's records of ``tp``, from where ``wanted`` starts to the end seen first.

    Records of other consents are skipped on their key, and, with ``since``, records whose
    timestamp is earlier (the matcher stamps a record after its ``matched_at``, so such a
    record cannot be wanted), all without decoding.

    Raises:
        ReplayFailedError: The broker returned nothing below the end for too many polls.
    """
    start = await _start_offset(reader, tp, wanted.since_ms)
    if start is None:
        return
    reader.seek(tp, start)
    key = wanted.consent_id.encode()
    since_ms = wanted.since_ms
    stop: int | None = None
    empty_polls = 0
    while stop is None or await reader.position(tp) < stop:
        batches = await reader.getmany(tp, timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
        if stop is None:
            # The end as of the first fetch: what arrives later is the worker's to deliver.
            stop = reader.highwater(tp)
        records = batches.get(tp, [])
        if not records:
            empty_polls += 1
            if empty_polls > _MAX_EMPTY_POLLS:
                raise ReplayFailedError(
                    f"{tp.topic}[{tp.partition}] returned no records below its end "
                    f"{stop} for {_MAX_EMPTY_POLLS} polls: request the replay again"
                )
            continue
        empty_polls = 0
        for record in records:
            if stop is not None and record.offset >= stop:
                return
            if record.key != key or (since_ms is not None and 0 <= record.timestamp < since_ms):
                continue
            yield record


async def _start_offset(
    reader: AIOKafkaConsumer, tp: TopicPartition, since_ms: int | None
) -> int | None:
    """Where to start reading ``tp``; None when it holds no record at all.

    With ``since_ms`` the broker is asked for the first offset at that time (ListOffsets by
    timestamp). Its answer is used only when it carries a timestamp at or after the one asked
    for: the embedded broker answers offset 0 with timestamp -1 for any time but the first
    record's, and then the partition is scanned from its beginning instead (still correct,
    as records are filtered by timestamp as they are read).
    """
    beginning = (await reader.beginning_offsets([tp]))[tp]
    # On Kafka the end; on Tansu one past the start of the last batch. Either way it is
    # beyond the beginning exactly when the partition holds a record.
    listed_end = (await reader.end_offsets([tp]))[tp]
    if listed_end <= beginning:
        return None
    if since_ms is None:
        return int(beginning)
    found = (await reader.offsets_for_times({tp: since_ms})).get(tp)
    if found is not None and found.timestamp >= since_ms and found.offset >= beginning:
        return int(found.offset)
    return int(beginning)
