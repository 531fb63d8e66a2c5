"""What the API logs of its own attempts (resends and test events), and what it answers.

The entry of a resend repeats its message's description as the worker's entries give it
(ids, sequences, records, sources, the consent's ledger values) with the resend's attempt; a
test event's names no consent and no records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from portability.messages.queries import MessageView
from portability.messages.rebuilding import Rebuilt
from portability.wire.delivery_log import PING_EVENT, DeliveryLogEntry, LoggedRecord, Origin
from portability.wire.records import AppRecord

__all__ = ["AttemptResult", "attempt_entry"]


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """The outcome of one attempt by the API, as it was logged.

    Attributes:
        logged: Its entry reached ``delivery.log`` (False: the broker refused it; the attempt
            was made all the same, and is missing from the log).
    """

    message_id: str
    origin: Origin
    attempt: int
    attempted_at: datetime
    endpoint_url: str
    ok: bool
    status: int | None
    duration_ms: int
    reason: str
    response_excerpt: str
    logged: bool


def attempt_entry(
    app: AppRecord,
    result: AttemptResult,
    body: bytes,
    message: MessageView | None,
    rebuilt: Rebuilt | None,
) -> DeliveryLogEntry:
    """The log entry of an attempt: a resend repeats its message's description."""
    records: list[LoggedRecord] = rebuilt.records if rebuilt is not None else []
    return DeliveryLogEntry(
        message_id=result.message_id,
        app_id=app["app_id"],
        consent_id=message.consent_id if message else "",
        user_id=message.user_id if message else "",
        event_type=message.event_type if message else PING_EVENT,
        endpoint_url=result.endpoint_url,
        origin=result.origin,
        attempt=result.attempt,
        attempted_at=result.attempted_at,
        duration_ms=result.duration_ms,
        ok=result.ok,
        status=result.status,
        reason=result.reason,
        response_excerpt=result.response_excerpt,
        size=len(body),
        body_sha256=rebuilt.body_sha256 if rebuilt else hashlib.sha256(body).hexdigest(),
        first_sequence=message.first_sequence if message else None,
        last_sequence=message.last_sequence if message else None,
        snapshot_epoch=message.snapshot_epoch if message else None,
        removal_reason=message.removal_reason if message else None,
        records=records,
        sources=list(message.sources) if message else [],
        ledger=message.ledger if message else None,
    )
