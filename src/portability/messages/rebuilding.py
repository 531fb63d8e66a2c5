"""Building a message again from its records: the same body, byte for byte, as first sent.

The body is built by the functions the delivery worker builds it with
(:mod:`portability.webhooks.payload`): a batch of deltas from their heads, in the order they
were sent (:func:`~portability.webhooks.payload.head_delta_event`), a notification (a snapshot
page, a removal, a download) from its one record
(:func:`~portability.webhooks.payload.notification_event`). The log names the message's
records as the worker's entries do (:mod:`portability.delivery.delivery_log`), so a resend's
entry describes what it carried just as the first attempt's did.

The body carries the consent's ledger values (:mod:`portability.webhooks.ledger`), which the
log keeps as the chain's value before the message: they are computed again from it, with the
digests the worker extends the chain with (a delta's as the matcher wrote it, else from its
rendering; a notification's over its ``data``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import ConsumerRecord

from portability.delivery.delivery_log import page_records
from portability.messages.refusals import MessageRefusedError
from portability.webhooks import ledger
from portability.webhooks.payload import (
    delivery_head,
    head_delta_event,
    ledger_digest,
    notification_digest,
    notification_event,
)
from portability.wire.codec import AvroCodec
from portability.wire.delivery_log import DELTA_EVENT, LoggedLedger, LoggedRecord
from portability.wire.errors import WireFormatError
from portability.wire.notifications import SNAPSHOT
from portability.wire.records import DeliveryHead, NotificationRecord
from portability.wire.schemas import SchemaName

__all__ = ["Rebuilt", "delta_ledgers", "notification_ledger", "rebuild"]


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """A message built again: its id, body, the body's SHA-256 and the records it carries."""

    message_id: str
    body: bytes
    body_sha256: str
    records: list[LoggedRecord]


async def rebuild(
    codec: AvroCodec,
    event_type: str,
    records: Sequence[ConsumerRecord[bytes, bytes]],
    chain: LoggedLedger | None = None,
) -> Rebuilt:
    """The message of ``event_type`` that ``records`` (read at its sources, in order) make.

    Args:
        chain: The consent's ledger around the message, as logged; None for a message sent
            without ledger values (by a worker that predates them).

    Raises:
        MessageRefusedError: ``source_unreadable``: a record does not decode, or the records
            do not make one message of that type.
    """
    try:
        if event_type == DELTA_EVENT:
            heads = [await _head(codec, record.value) for record in records]
            values = None if chain is None else delta_ledgers(chain["before"], heads)
            message_id, body = head_delta_event(heads, values)
            logged = [_logged(head) for head in heads]
        else:
            _check_one(event_type, records)
            notification = await codec.decode_fetching(SchemaName.NOTIFICATION, records[0].value)
            value = None if chain is None else notification_ledger(chain["before"], notification)
            message_id, body = notification_event(notification, value)
            logged = _page_records(notification) if event_type == SNAPSHOT else []
    # TypeError: a change whose record JSON cannot carry; ValueError: not one consent's batch.
    except (WireFormatError, ValueError, TypeError) as error:
        raise MessageRefusedError(
            "source_unreadable",
            f"the message's records cannot be built into its body again ({error}): it cannot "
            "be resent as it was",
        ) from error
    return Rebuilt(message_id, body, hashlib.sha256(body).hexdigest(), logged)


def delta_ledgers(before: str, heads: Sequence[DeliveryHead]) -> list[str]:
    """The chain's value after each delta of a batch, from its value ``before`` the batch."""
    return ledger.chain(before, (ledger_digest(head) for head in heads))


def notification_ledger(before: str, notification: NotificationRecord) -> str:
    """The chain's value after a notification, from its value ``before`` it."""
    return ledger.chain(before, [notification_digest(notification)])[0]


def _check_one(event_type: str, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
    if len(records) != 1:
        raise ValueError(f"a {event_type} message is one record, not {len(records)}")


async def _head(codec: AvroCodec, value: bytes | None) -> DeliveryHead:
    """A delivery's head as the worker reads it: off the bytes, else decoded in full."""
    head = codec.delivery_head(value)
    if head is not None:
        return head
    return delivery_head(await codec.decode_fetching(SchemaName.DELIVERY, value))


def _page_records(notification: NotificationRecord) -> list[LoggedRecord]:
    """A page's records as the worker's entries name them (its :func:`page_records`)."""
    return [
        LoggedRecord(
            delta_id=delta_id,
            record_id=record_id,
            category=category,
            operation=operation,
            sequence=sequence,
            policy_version=policy_version,
        )
        for delta_id, record_id, category, operation, sequence, policy_version in page_records(
            notification
        )
    ]


def _logged(head: DeliveryHead) -> LoggedRecord:
    return LoggedRecord(
        delta_id=head["delta_id"],
        record_id=head["record_id"],
        category=head["category"],
        operation=head["operation"],
        sequence=head["sequence"],
        policy_version=head["policy_version"],
    )
