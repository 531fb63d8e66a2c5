"""Timestamps at the consent store's boundary: aware UTC, millisecond precision.

Kafka records carry ``timestamp-millis``; truncating to milliseconds as a value enters the
store means the database, the views and the published records all hold the same instant.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from portability.consent.errors import InvalidRequestError

__all__ = ["EPOCH", "millis", "normalize", "utc_now"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def _truncate(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def utc_now() -> datetime:
    """The current time, aware UTC, truncated to milliseconds."""
    return _truncate(datetime.now(UTC))


def normalize(moment: datetime, name: str) -> datetime:
    """``moment`` in UTC truncated to milliseconds; a naive datetime is refused.

    Raises:
        InvalidRequestError: ``moment`` has no timezone, so the instant it means is unknown.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidRequestError(
            f"{name} must be timezone-aware (e.g. datetime.now(UTC)), got naive {moment!r}"
        )
    return _truncate(moment.astimezone(UTC))


def millis(moment: datetime) -> int:
    """Milliseconds since the epoch, in exact integer arithmetic (no float rounding)."""
    return (moment - EPOCH) // _MILLISECOND
