"""Log entries for the message log's tests, stored as the log's writer stores them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from portability.wire.delivery_log import DELTA_EVENT, DeliveryLogEntry, LoggedRecord, LoggedSource

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def log_entry(
    message_id: str,
    app_id: str,
    *,
    consent_id: str = "cns_one",
    attempted_at: datetime = T0,
    ok: bool = True,
    attempt: int = 1,
    origin: str = "worker",
    event_type: str = DELTA_EVENT,
    records: Sequence[LoggedRecord] = (),
    sources: Sequence[LoggedSource] = (),
    body_sha256: str = "0" * 64,
    **overrides: Any,
) -> DeliveryLogEntry:
    """One attempt at ``message_id``; every field the schema has, with plain defaults."""
    entry = DeliveryLogEntry(
        message_id=message_id,
        app_id=app_id,
        consent_id=consent_id,
        user_id="u1" if consent_id else "",
        event_type=event_type,
        endpoint_url=f"https://{app_id}.example/hooks",
        origin=origin,
        attempt=attempt,
        attempted_at=attempted_at,
        duration_ms=12,
        ok=ok,
        status=204 if ok else 503,
        reason="" if ok else "HTTP 503",
        response_excerpt="" if ok else "busy",
        size=100,
        body_sha256=body_sha256,
        first_sequence=1 if event_type == DELTA_EVENT else None,
        last_sequence=len(records) or 1 if event_type == DELTA_EVENT else None,
        snapshot_epoch=None,
        removal_reason=None,
        records=list(records),
        sources=list(sources),
        ledger=None,
    )
    return DeliveryLogEntry(**{**entry, **overrides})  # type: ignore[typeddict-item]
