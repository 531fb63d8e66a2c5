"""The worker's side of the message log: one entry per attempt, produced before commits.

Every attempt at a webhook message (a batch of deltas, a snapshot page, a removal) becomes a
:class:`~portability.wire.delivery_log.DeliveryLogEntry` on ``delivery.log``; the message
log's writer (:mod:`portability.messages`) stores them in the database in batches. The hot
path only notes what it needs in a tuple (:meth:`DeliveryLog.attempted`): the entries are
built, hashed, encoded and produced by the commit loop (every 0.1 s) before it commits the
offsets of what finished, so a request never waits on the log, and an offset is committed
only once the attempts of its records are on the broker: a worker that dies loses no entry
of a message that will not be sent again. Past ``_MAX_PENDING`` entries waiting (the broker
unreachable for long, while apps still answer), the oldest are dropped and counted
(``log_entries_dropped``, with a warning): deliveries go on.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Final

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from portability.delivery.flushing import send_batches
from portability.delivery.lanes import Item
from portability.delivery.sender import Outcome
from portability.delivery.stats import DeliveryStats
from portability.wire.codec import AvroCodec
from portability.wire.delivery_log import DELTA_EVENT
from portability.wire.delivery_log_encoder import EncodedLedger, EncodedRecord, LogEntryEncoder
from portability.wire.records import AppRecord, NotificationRecord
from portability.wire.schemas import SchemaName

__all__ = ["DeliveryLog"]

# The role's logger, whichever part of the worker writes: operators filter its lines by one name.
log = logging.getLogger("portability.delivery.worker")

_MAX_PENDING: Final = 200_000
_EXCERPT: Final = 1024
_FEED: Final = "feed"  # the endpoint of a poll-mode app's entries: its pull feed


@dataclass(slots=True)
class _Noted:
    """What the hot path keeps of one attempt until the commit loop builds its entry."""

    app_id: str
    endpoint_url: str
    message_id: str
    body: bytes
    items: list[Item]
    attempt: int
    attempted_at: float  # epoch seconds
    duration_s: float
    outcome: Outcome
    ledger: EncodedLedger | None


class DeliveryLog:
    """Notes attempts on the hot path; the commit loop produces their entries (:meth:`flush`)."""

    def __init__(
        self, producer: AIOKafkaProducer, codec: AvroCodec, topic: str, stats: DeliveryStats
    ) -> None:
        self._producer = producer
        self._encoder = LogEntryEncoder(codec.schema_id(SchemaName.DELIVERY_LOG_ENTRY))
        self._topic = topic
        self._stats = stats
        self._pending: list[_Noted] = []

    def attempted(
        self,
        app: AppRecord,
        message_id: str,
        body: bytes,
        items: list[Item],
        timing: tuple[float, float],
        outcome: Outcome,
        ledger: EncodedLedger | None,
    ) -> None:
        """Note one attempt (no I/O, no hashing: :meth:`flush` does both).

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
        pending.append(
            _Noted(
                app["app_id"],
                _FEED if app.get("delivery_mode") == "poll" else app["webhook_url"],
                message_id,
                body,
                list(items),
                items[0].ticket.failures + 1,
                *timing,
                outcome,
                ledger,
            )
        )

    async def flush(self) -> None:
        """Produce every noted attempt's entry and wait for the broker's acks."""
        noted, self._pending = self._pending, []
        if not noted:
            return
        encoder = self._encoder
        try:
            # In the partition of the consent's deliveries: a consent's entries stay in order.
            await send_batches(
                self._producer,
                self._topic,
                (
                    (noted_one.items[0].tp.partition, noted_one.message_id.encode(), value)
                    for noted_one in noted
                    for value in (_encoded(encoder, noted_one),)
                ),
            )
        except KafkaError:
            self._pending[:0] = noted  # in order, before what came since: sent again
            raise
        self._stats.log_entries += len(noted)


def _encoded(encoder: LogEntryEncoder, noted: _Noted) -> bytes:
    """The log entry of one noted attempt, encoded."""
    items, outcome = noted.items, noted.outcome
    first, last = items[0], items[-1]
    user_id, event_type = "", DELTA_EVENT
    sequences: tuple[int | None, int | None] = (None, None)
    epoch: int | None = None
    removal: str | None = None
    records: list[EncodedRecord] = []
    if first.delivery is not None and last.delivery is not None:
        user_id = first.delivery["user_id"]
        sequences = (first.delivery["sequence"], last.delivery["sequence"])
        records = [
            (
                head["delta_id"],
                head["record_id"],
                head["category"],
                head["operation"],
                head["sequence"],
                head["policy_version"],
            )
            for head in (item.delivery for item in items)
            if head is not None
        ]
    elif first.notification is not None:
        notification = first.notification
        user_id, event_type = notification["user_id"], notification["event_type"]
        removal = notification["attributes"].get("reason")
        if first.page is not None:
            epoch = first.page.epoch
            records = page_records(notification)
    return encoder.encode(
        strings=(
            noted.message_id,
            noted.app_id,
            first.consent_id,
            user_id,
            event_type,
            noted.endpoint_url,
            "worker",
        ),
        attempt=noted.attempt,
        attempted_at_ms=int(noted.attempted_at * 1000),
        duration_ms=int(noted.duration_s * 1000),
        ok=outcome.ok,
        status=outcome.status,
        reason="" if outcome.ok else outcome.reason,
        response_excerpt="" if outcome.ok else outcome.body_excerpt[:_EXCERPT],
        size=len(noted.body),
        body_sha256=hashlib.sha256(noted.body).hexdigest(),
        sequences=sequences,
        snapshot_epoch=epoch,
        removal_reason=removal,
        records=records,
        sources=[(item.tp.topic, item.tp.partition, item.offset) for item in items],
        ledger=noted.ledger,
    )


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
