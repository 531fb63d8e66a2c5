"""Reading a message's records again, at the positions its log entry names, for a resend.

A resend reads with a reader outside any group (no group's offsets move), assigned to the
partitions its sources name, seeking to each offset in turn: the records of one message sit
close together, so one fetch usually brings several. A record that is not at its offset any
more (below the partition's beginning, past its end, or skipped by a fetch that starts after
it) was removed by retention or compaction (or its topic recreated): the message cannot be
rebuilt, and the error says so. A broker that returns nothing within the wait is reported as
such: the resend may be retried.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from portability.messages.refusals import ActionUnavailableError, RecordsGoneError
from portability.wire.delivery_log import LoggedSource

__all__ = ["read_sources"]

_POLL_MS = 200
_MAX_RECORDS = 100  # per fetch: a message's records are close, a fetch rarely needs more


async def read_sources(
    reader: AIOKafkaConsumer, sources: Sequence[LoggedSource], *, timeout_s: float
) -> list[ConsumerRecord[bytes, bytes]]:
    """The records at ``sources``, in the order given.

    Args:
        reader: A started consumer without a group; it is assigned the sources' partitions.
        sources: Where each record was read when the message was first sent.
        timeout_s: How long to wait for the broker in all.

    Raises:
        RecordsGoneError: A source's topic, partition or record is gone.
        ActionUnavailableError: The broker returned nothing within ``timeout_s`` (retriable).
    """
    deadline = time.monotonic() + timeout_s
    wanted: dict[TopicPartition, set[int]] = {}
    for source in sources:
        wanted.setdefault(TopicPartition(source["topic"], source["partition"]), set()).add(
            source["offset"]
        )
    await _check_partitions(reader, list(wanted))
    reader.assign(list(wanted))
    beginnings = await reader.beginning_offsets(list(wanted))
    found: dict[tuple[TopicPartition, int], ConsumerRecord[bytes, bytes]] = {}
    for tp, offsets in wanted.items():
        for offset in sorted(offsets):
            if (tp, offset) in found:
                continue
            if offset < beginnings[tp]:
                raise _gone(tp, offset, f"the partition now begins at offset {beginnings[tp]}")
            reader.seek(tp, offset)
            records = await _fetch(reader, tp, offset, deadline)
            if records[0].offset > offset or records[-1].offset < offset:
                raise _gone(tp, offset, "it is no longer on the partition")
            for record in records:
                if record.offset in offsets:
                    found[(tp, record.offset)] = record
            if (tp, offset) not in found:
                raise _gone(tp, offset, "it is no longer on the partition")
    return [
        found[(TopicPartition(source["topic"], source["partition"]), source["offset"])]
        for source in sources
    ]


async def _check_partitions(reader: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
    """Refuse a source on a topic or partition the broker does not have (deleted since)."""
    known = await reader.topics()
    for tp in partitions:
        if tp.topic not in known or tp.partition not in (
            reader.partitions_for_topic(tp.topic) or ()
        ):
            raise RecordsGoneError(
                f"the message's records were read from {tp.topic}[{tp.partition}], which the "
                "broker no longer has: the message cannot be sent again as it was"
            )


async def _fetch(
    reader: AIOKafkaConsumer, tp: TopicPartition, offset: int, deadline: float
) -> list[ConsumerRecord[bytes, bytes]]:
    """The next records of ``tp`` from where the reader stands; bounded by ``deadline``."""
    while True:
        batches = await reader.getmany(tp, timeout_ms=_POLL_MS, max_records=_MAX_RECORDS)
        records: list[ConsumerRecord[bytes, bytes]] = batches.get(tp, [])
        if records:
            return records
        end = reader.highwater(tp)
        if end is not None and offset >= end:
            # The fetch's high watermark (right on Kafka and Tansu alike, unlike Tansu's
            # ListOffsets): the record was written once, so the log was cut or recreated since.
            raise _gone(tp, offset, f"the partition now ends at offset {end}")
        if time.monotonic() >= deadline:
            raise ActionUnavailableError(
                f"the broker returned nothing from {tp.topic}[{tp.partition}]@{offset} in "
                "time: try the resend again shortly",
                retriable=True,
            )


def _gone(tp: TopicPartition, offset: int, why: str) -> RecordsGoneError:
    return RecordsGoneError(
        f"the message's record at {tp.topic}[{tp.partition}]@{offset} was removed ({why}): "
        "the topics keep records for their retention only (deliveries: 7 days), so this "
        "message cannot be sent again as it was"
    )
