"""A hand-written Avro encoder for the delivery log's entries, for the worker's hot path.

fastavro's writer took about 7 us per delta of an entry (nested records of six fields per
delta), more than everything else the log costs the worker together. This encoder writes
the same bytes as ``AvroCodec.encode(SchemaName.DELIVERY_LOG_ENTRY, entry)`` for this
build's schema (``schemas/delivery_log_entry.avsc``, field by field in its order), from plain
values, with the strings that repeat (categories, operations, policy versions, topics)
encoded once. A test checks it against fastavro's bytes for every kind of entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

from portability.wire.avro_binary import avro_long, avro_string, repeated_string

__all__ = [
    "EncodedLedger",
    "EncodedRecord",
    "EncodedSource",
    "LedgerHeadEncoder",
    "LogEntryEncoder",
    "logged_record",
]

# (delta_id, record_id, category, operation, sequence or None, policy_version)
EncodedRecord = tuple[str, str, str, str, int | None, str]
# (topic, partition, offset)
EncodedSource = tuple[str, int, int]
# (before, after, events, deltas, pages, removals)
EncodedLedger = tuple[str, str, int, int, int, int]


def _optional_long(value: int | None) -> bytes:
    return b"\x00" if value is None else b"\x02" + avro_long(value)


class LogEntryEncoder:
    """Writes framed DeliveryLogEntry records (Confluent framing: magic byte, schema id)."""

    def __init__(self, schema_id: int) -> None:
        self._header = b"\x00" + schema_id.to_bytes(4, "big")

    def encode(
        self,
        *,
        strings: Sequence[str],
        attempt: int,
        attempted_at_ms: int,
        duration_ms: int,
        ok: bool,
        status: int | None,
        reason: str,
        response_excerpt: str,
        size: int,
        body_sha256: str,
        sequences: tuple[int | None, int | None],
        snapshot_epoch: int | None,
        removal_reason: str | None,
        records_and_sources: bytes,
        ledger: EncodedLedger | None,
    ) -> bytes:
        """One entry's framed bytes. ``strings``: message_id, app_id, consent_id, user_id,
        event_type, endpoint_url and origin, in that order (the schema's first fields);
        ``records_and_sources`` from :meth:`records_and_sources`."""
        parts = [self._header]
        parts.extend(avro_string(value) for value in strings)
        parts += (
            avro_long(attempt),
            avro_long(attempted_at_ms),
            avro_long(duration_ms),
            b"\x01" if ok else b"\x00",
            _optional_long(status),
            avro_string(reason),
            avro_string(response_excerpt),
            avro_long(size),
            avro_string(body_sha256),
            _optional_long(sequences[0]),
            _optional_long(sequences[1]),
            _optional_long(snapshot_epoch),
            b"\x00" if removal_reason is None else b"\x02" + avro_string(removal_reason),
        )
        parts.append(records_and_sources)
        if ledger is None:
            parts.append(b"\x00")
        else:
            before, after, *counts = ledger
            parts += (
                b"\x02",
                avro_string(before),
                avro_string(after),
                *(avro_long(n) for n in counts),
            )
        return b"".join(parts)

    @staticmethod
    def records_and_sources(records: Sequence[bytes], sources: Iterable[EncodedSource]) -> bytes:
        """The entry's ``records`` (each from :func:`logged_record`, or as a delta's head
        carries it) and ``sources`` fields, encoded apart from the rest: the worker encodes
        them as it builds the request, while the records are at hand."""
        return _block(len(records), list(records)) + _sources(sources)


class LedgerHeadEncoder:
    """Writes framed LedgerHead records (``schemas/ledger_head.avsc``): the commit loop writes
    one per consent delivered to since the last, where fastavro cost about 4 us each."""

    def __init__(self, schema_id: int) -> None:
        self._header = b"\x00" + schema_id.to_bytes(4, "big")

    def encode(
        self,
        *,
        consent_id: str,
        app_id: str,
        head: str,
        counts: tuple[int, int, int, int],
        order: Sequence[int],
        identity: str,
        recorded_at_ms: int,
    ) -> bytes:
        """One head's framed bytes. ``counts``: events, deltas, pages and removals."""
        return b"".join(
            (
                self._header,
                avro_string(consent_id),
                avro_string(app_id),
                avro_string(head),
                *(avro_long(count) for count in counts),
                _block(len(order), [avro_long(place) for place in order]),
                avro_string(identity),
                avro_long(recorded_at_ms),
            )
        )


def logged_record(
    delta_id: str,
    record_id: str,
    category: str,
    operation: str,
    sequence: int | None,
    policy_version: str,
) -> bytes:
    """One ``LoggedRecord``'s bytes. A delta's come ready in its head, sliced off the Delivery
    record's own bytes (:mod:`portability.wire.delivery_head`); this writes the same."""
    return b"".join(
        (
            avro_string(delta_id),
            avro_string(record_id),
            repeated_string(category),
            repeated_string(operation),
            b"\x00" if sequence is None else b"\x02" + avro_long(sequence),
            repeated_string(policy_version),
        )
    )


def _sources(sources: Iterable[EncodedSource]) -> bytes:
    parts: list[bytes] = []
    append, count, where = parts.append, 0, _source_partition
    for topic, partition, offset in sources:
        count += 1
        append(where(topic, partition))
        append(avro_long(offset))
    return _block(count, parts)


@lru_cache(maxsize=4096)
def _source_partition(topic: str, partition: int) -> bytes:
    """A source's topic and partition: the same for most of a worker's sources."""
    return avro_string(topic) + avro_long(partition)


def _block(count: int, parts: list[bytes]) -> bytes:
    """An array of ``count`` items (``parts`` their bytes) in one block, and its end."""
    if not count:
        return b"\x00"
    return avro_long(count) + b"".join(parts) + b"\x00"
