"""Parked deliveries: what the retry topic's records carry besides the original value.

A delivery that must wait long (minutes to hours) is parked: its original Avro value is
written to ``deliveries.retry`` (partitioned like deliveries) with headers saying which kind
of record it is, how many attempts failed, when to try next, and what happened each time.
The source offset can then be committed, so a long outage of one endpoint never holds back
a partition, and a worker crash loses nothing: the retry topic is read again on restart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from portability.wire.headers import (
    RETRY_FAILURES_HEADER,
    RETRY_HEADER_PREFIX,
    RETRY_HISTORY_HEADER,
    RETRY_KIND_HEADER,
    RETRY_NOT_BEFORE_HEADER,
)

__all__ = ["HISTORY_LIMIT", "Attempt", "ParkingTicket", "RecordKind"]

RecordKind = Literal["delivery", "notification"]

HISTORY_LIMIT = 20  # attempts kept in headers; the schedule has 8 by default


@dataclass(frozen=True, slots=True)
class Attempt:
    """One failed attempt, as an operator reads it in a dead letter's history."""

    at: datetime
    status: int | None
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "status": self.status, "reason": self.reason}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Attempt:
        status = document.get("status")
        return cls(
            at=datetime.fromisoformat(str(document["at"])),
            status=status if isinstance(status, int) else None,
            reason=str(document.get("reason", "")),
        )


@dataclass(frozen=True, slots=True)
class ParkingTicket:
    """The retry state of a parked record."""

    kind: RecordKind
    failures: int = 0
    not_before: float = 0.0  # epoch seconds
    history: tuple[Attempt, ...] = field(default=())

    def headers(self) -> list[tuple[str, bytes]]:
        history = [attempt.as_json() for attempt in self.history[-HISTORY_LIMIT:]]
        return [
            (RETRY_KIND_HEADER, self.kind.encode()),
            (RETRY_FAILURES_HEADER, str(self.failures).encode()),
            (RETRY_NOT_BEFORE_HEADER, f"{self.not_before:.3f}".encode()),
            (RETRY_HISTORY_HEADER, json.dumps(history).encode()),
        ]

    @classmethod
    def from_headers(cls, headers: Sequence[tuple[str, bytes]]) -> ParkingTicket:
        """Read a ticket; raises ValueError when the headers are missing or malformed."""
        values = {
            name: value.decode() for name, value in headers if name.startswith(RETRY_HEADER_PREFIX)
        }
        kind: RecordKind
        match values.get(RETRY_KIND_HEADER):
            case "delivery":
                kind = "delivery"
            case "notification":
                kind = "notification"
            case other:
                raise ValueError(f"retry record has kind {other!r}, not delivery or notification")
        history = json.loads(values.get(RETRY_HISTORY_HEADER, "[]"))
        if not isinstance(history, list):
            # TRY004: bad input, not a bug
            raise ValueError(f"{RETRY_HISTORY_HEADER} is not a list")  # noqa: TRY004
        return cls(
            kind=kind,
            failures=int(values.get(RETRY_FAILURES_HEADER, "0")),
            not_before=float(values.get(RETRY_NOT_BEFORE_HEADER, "0")),
            history=tuple(Attempt.from_json(item) for item in history),
        )


def now_utc() -> datetime:
    return datetime.now(UTC)
