"""The worker's side of the message log: one entry per attempt, produced before commits.

Every attempt at a webhook message (a batch of deltas, a snapshot page, a removal) becomes a
:class:`~portability.wire.delivery_log.DeliveryLogEntry` on ``delivery.log``; the message
log's writer (:mod:`portability.messages`) stores them in the database in batches. The
request path encodes the entry without I/O: what it says of the records (ids, sources, the
body's hash) as the request is built (:meth:`DeliveryLog.describe`, while they are at hand),
the rest when the outcome is known (:meth:`DeliveryLog.attempted`); what waits is bytes only,
holding no record or body in memory. The commit loop (every 0.1 s) produces the
entries (:meth:`DeliveryLog.flush`) before it commits the offsets of what finished, so a
request never waits on the log, and an offset is committed only once the attempts of its
records are on the broker: a worker that dies loses no entry of a message that will not be
sent again. Past ``_MAX_PENDING`` entries waiting (the broker unreachable for long, while
apps still answer), the oldest are dropped and counted (``log_entries_dropped``, with a
warning): deliveries go on.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Final

import orjson
from aiokafka import AIOKafkaProducer

from portability.broker.batches import send_batches
from portability.delivery.lanes import Item
from portability.delivery.sender import Outcome
from portability.delivery.stats import DeliveryStats
from portability.wire.codec import AvroCodec
from portability.wire.delivery_log import DELTA_EVENT
from portability.wire.delivery_log_encoder import (
    EncodedLedger,
    EncodedRecord,
    LogEntryEncoder,
    logged_record,
)
from portability.wire.records import AppRecord, NotificationRecord
from portability.wire.schemas import SchemaName

__all__ = ["DeliveryLog", "Described"]

# The role's logger, whichever part of the worker writes: operators filter its lines by one name.
log = logging.getLogger("portability.delivery.worker")

_MAX_PENDING: Final = 200_000
_EXCERPT: Final = 1024
_FEED: Final = "feed"  # the endpoint of a poll-mode app's entries: its pull feed


@dataclass(frozen=True, slots=True)
class Described:
    """What a request's entries say of its records, encoded as the request is built."""

    partition: int  # of the consent's deliveries: its entries stay in order there
    consent_id: str
    user_id: str
    event_type: str
    sequences: tuple[int | None, int | None]
    snapshot_epoch: int | None
    removal_reason: str | None
    size: int
    body_sha256: str
    attempt: int
    records_and_sources: bytes


class DeliveryLog:
    """Encodes attempts' entries on the request path; the commit loop produces them."""

    def __init__(
        self, producer: AIOKafkaProducer, codec: AvroCodec, topic: str, stats: DeliveryStats
    ) -> None:
        self._producer = producer
        self._encoder = LogEntryEncoder(codec.schema_id(SchemaName.DELIVERY_LOG_ENTRY))
        self._topic = topic
        self._stats = stats
        self._pending: list[tuple[int, bytes, bytes]] = []  # (partition, key, value)

    def describe(self, items: list[Item], body: bytes) -> Described:
        """What the entries of a request of ``items`` with ``body`` say of them."""
        first, last = items[0], items[-1]
        user_id, event_type = "", DELTA_EVENT
        sequences: tuple[int | None, int | None] = (None, None)
        epoch: int | None = None
        removal: str | None = None
        records: list[bytes] = []
        if first.delivery is not None and last.delivery is not None:
            user_id = first.delivery["user_id"]
            sequences = (first.delivery["sequence"], last.delivery["sequence"])
            # A request holds deltas only, or one notification: each head carries its record.
            records = [item.delivery["logged"] for item in items if item.delivery is not None]
        elif first.notification is not None:
            notification = first.notification
            user_id, event_type = notification["user_id"], notification["event_type"]
            removal = notification["attributes"].get("reason")
            if first.page is not None:
                epoch = first.page.epoch
                records = [logged_record(*record) for record in page_records(notification)]
        return Described(
            first.tp.partition,
            first.consent_id,
            user_id,
            event_type,
            sequences,
            epoch,
            removal,
            len(body),
            hashlib.sha256(body).hexdigest(),
            first.ticket.failures + 1,
            self._encoder.records_and_sources(
                records, [(item.tp.topic, item.tp.partition, item.offset) for item in items]
            ),
        )

    def attempted(
        self,
        app: AppRecord,
        message_id: str,
        described: Described,
        timing: tuple[float, float],
        outcome: Outcome,
        ledger: EncodedLedger | None,
    ) -> None:
        """Encode one attempt's entry, to be produced by :meth:`flush` (no I/O).

        ``timing``: when it started (epoch seconds) and how long it took (seconds).
        """
        pending = self._pending
        if len(pending) >= _MAX_PENDING:
            del pending[: len(pending) // 10]
            self._stats.log_entries_dropped += _MAX_PENDING // 10
            log.warning(
                "message log entries dropped: %d attempts wait to be logged (is the broker "
                "reachable?); deliveries go on",
                _MAX_PENDING,
                extra={"event": "delivery.log_dropped"},
            )
        started, duration_s = timing
        value = self._encoder.encode(
            strings=(
                message_id,
                app["app_id"],
                described.consent_id,
                described.user_id,
                described.event_type,
                _FEED if app.get("delivery_mode") == "poll" else app["webhook_url"],
                "worker",
            ),
            attempt=described.attempt,
            attempted_at_ms=int(started * 1000),
            duration_ms=int(duration_s * 1000),
            ok=outcome.ok,
            status=outcome.status,
            reason="" if outcome.ok else outcome.reason,
            response_excerpt="" if outcome.ok else outcome.body_excerpt[:_EXCERPT],
            size=described.size,
            body_sha256=described.body_sha256,
            sequences=described.sequences,
            snapshot_epoch=described.snapshot_epoch,
            removal_reason=described.removal_reason,
            records_and_sources=described.records_and_sources,
            ledger=ledger,
        )
        pending.append((described.partition, message_id.encode(), value))

    async def flush(self) -> None:
        """Produce every pending entry and wait for the broker's acks."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            await send_batches(self._producer, self._topic, pending)
        except BaseException:
            # Failed or cancelled: in order, before what came since, sent again (the writer
            # stores an entry it already has once).
            self._pending[:0] = pending
            raise
        self._stats.log_entries += len(pending)


def page_records(notification: NotificationRecord) -> list[EncodedRecord]:
    """The records of a snapshot page, as the log names them (ids and categories only)."""
    records = notification.get("records")
    if records is None:
        return []
    try:
        parsed = orjson.loads(records)
    except orjson.JSONDecodeError:
        return []  # the builder wrote it: delivered as it is, logged without its records
    policy = notification["attributes"].get("policy_version", "")
    return [
        (
            "",
            str(record.get("record_id", "")),
            str(record.get("category", "")),
            "snapshot",
            None,
            policy,
        )
        for record in (parsed if isinstance(parsed, list) else [])
        if isinstance(record, dict)
    ]
