"""Reading the message log: an app's messages, newest first, and one message with its attempts.

What the API's message routes answer. Pages are cut by an opaque cursor over
``(created_at, message_id)``, the order of the listing: a page starts strictly after the last
message of the one before, so messages written meanwhile (newer, or retried) neither repeat
nor shift what follows, and the cursor needs no server state. Every query names the app: a
message of another app is not found, as if it did not exist.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from portability.messages.errors import MessagesError
from portability.messages.ledgers import parse_ledger
from portability.messages.models import AttemptRow, MessageRow
from portability.wire.delivery_log import LoggedLedger, LoggedSource

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "AttemptView",
    "InvalidCursorError",
    "MessageFilter",
    "MessageNotFoundError",
    "MessagePage",
    "MessageView",
    "OutcomeFilter",
    "get_message",
    "list_messages",
    "message_sources",
]

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500

OutcomeFilter = Literal["delivered", "failing"]


class MessageNotFoundError(MessagesError):
    """No such message for this app (another app's message is not found either)."""

    def __init__(self, app_id: str, message_id: str) -> None:
        super().__init__(
            f"no message {message_id!r} of app {app_id!r}: check the id (GET "
            f"/v1/apps/{app_id}/messages lists them; they are kept for the log's retention)"
        )
        self.app_id = app_id
        self.message_id = message_id


class InvalidCursorError(MessagesError):
    """A cursor this server did not hand out (or one damaged on the way)."""


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Which of an app's messages to list; None means any."""

    consent_id: str | None = None
    event_type: str | None = None
    outcome: OutcomeFilter | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before


@dataclass(frozen=True, slots=True)
class MessageView:
    """One message as the log holds it (a snapshot of its row)."""

    message_id: str
    app_id: str
    consent_id: str
    user_id: str
    event_type: str
    endpoint_url: str
    first_sequence: int | None
    last_sequence: int | None
    snapshot_epoch: int | None
    removal_reason: str | None
    size: int
    body_sha256: str
    record_count: int
    sources: tuple[LoggedSource, ...]
    created_at: datetime
    last_attempt_at: datetime
    attempts: int
    outcome: str
    delivered_at: datetime | None
    last_status: int | None
    last_reason: str
    ledger: LoggedLedger | None = None  # the consent's chain around it (see .ledgers)

    @classmethod
    def of(cls, row: MessageRow) -> MessageView:
        return cls(
            message_id=row.message_id,
            app_id=row.app_id,
            consent_id=row.consent_id,
            user_id=row.user_id,
            event_type=row.event_type,
            endpoint_url=row.endpoint_url,
            first_sequence=row.first_sequence,
            last_sequence=row.last_sequence,
            snapshot_epoch=row.snapshot_epoch,
            removal_reason=row.removal_reason,
            size=row.size,
            body_sha256=row.body_sha256,
            record_count=row.record_count,
            sources=message_sources(row.sources),
            created_at=row.created_at,
            last_attempt_at=row.last_attempt_at,
            attempts=row.attempts,
            outcome=row.outcome,
            delivered_at=row.delivered_at,
            last_status=row.last_status,
            last_reason=row.last_reason,
            ledger=parse_ledger(row.ledger),
        )


@dataclass(frozen=True, slots=True)
class AttemptView:
    """One attempt at a message."""

    origin: str
    attempt: int
    attempted_at: datetime
    duration_ms: int
    ok: bool
    status: int | None
    reason: str
    response_excerpt: str
    endpoint_url: str

    @classmethod
    def of(cls, row: AttemptRow) -> AttemptView:
        return cls(
            origin=row.origin,
            attempt=row.attempt,
            attempted_at=row.attempted_at,
            duration_ms=row.duration_ms,
            ok=row.ok,
            status=row.status,
            reason=row.reason,
            response_excerpt=row.response_excerpt,
            endpoint_url=row.endpoint_url,
        )


@dataclass(frozen=True, slots=True)
class MessagePage:
    """One page of a listing; ``next_cursor`` is None on the last page."""

    messages: list[MessageView]
    next_cursor: str | None


def message_sources(stored: str) -> tuple[LoggedSource, ...]:
    """The ``sources`` column read back: where the message's records were read, in order.

    A value that is not the writer's JSON list reads as no sources (a resend then says the
    records cannot be found, rather than the listing failing).
    """
    try:
        items = json.loads(stored or "[]")
    except ValueError:
        return ()
    if not isinstance(items, list):
        return ()
    sources: list[LoggedSource] = []
    for item in items:
        try:
            topic, partition, offset = item["topic"], item["partition"], item["offset"]
        except (TypeError, KeyError):
            return ()
        if not (isinstance(topic, str) and isinstance(partition, int) and isinstance(offset, int)):
            return ()
        sources.append(LoggedSource(topic=topic, partition=partition, offset=offset))
    return tuple(sources)


def list_messages(
    engine: Engine,
    app_id: str,
    filters: MessageFilter | None = None,
    *,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> MessagePage:
    """The app's messages matching ``filters``, newest first, one page at a time.

    Args:
        engine: The consent store's engine (the log's tables live there).
        app_id: Whose messages.
        filters: Consent, event type, outcome, and a window on ``created_at``.
        cursor: The ``next_cursor`` of the page before; None for the first page.
        limit: Messages per page, 1 to :data:`MAX_LIMIT`.

    Raises:
        InvalidCursorError: ``cursor`` was not handed out by this log.
        ValueError: ``limit`` is out of range.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    wanted = filters or MessageFilter()
    query = select(MessageRow).where(col(MessageRow.app_id) == app_id)
    for condition in _conditions(wanted):
        query = query.where(condition)
    if cursor is not None:
        created_at, message_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(
                col(MessageRow.created_at) < created_at,
                sa.and_(
                    col(MessageRow.created_at) == created_at,
                    col(MessageRow.message_id) < message_id,
                ),
            )
        )
    query = query.order_by(col(MessageRow.created_at).desc(), col(MessageRow.message_id).desc())
    with Session(engine) as session:
        rows = session.exec(query.limit(limit + 1)).all()
    views = [MessageView.of(row) for row in rows[:limit]]
    more = len(rows) > limit
    return MessagePage(views, encode_cursor(views[-1]) if more and views else None)


def get_message(
    engine: Engine, app_id: str, message_id: str
) -> tuple[MessageView, list[AttemptView]]:
    """The app's message and its attempts, oldest first.

    Raises:
        MessageNotFoundError: No message ``message_id`` of ``app_id``.
    """
    with Session(engine) as session:
        row = session.get(MessageRow, message_id)
        if row is None or row.app_id != app_id:
            raise MessageNotFoundError(app_id, message_id)
        attempts = session.exec(
            select(AttemptRow)
            .where(col(AttemptRow.message_id) == message_id)
            .order_by(col(AttemptRow.attempted_at), col(AttemptRow.id))
        ).all()
        return MessageView.of(row), [AttemptView.of(attempt) for attempt in attempts]


def _conditions(wanted: MessageFilter) -> Sequence[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    if wanted.consent_id is not None:
        conditions.append(col(MessageRow.consent_id) == wanted.consent_id)
    if wanted.event_type is not None:
        conditions.append(col(MessageRow.event_type) == wanted.event_type)
    if wanted.outcome is not None:
        conditions.append(col(MessageRow.outcome) == wanted.outcome)
    if wanted.since is not None:
        conditions.append(col(MessageRow.created_at) >= wanted.since)
    if wanted.until is not None:
        conditions.append(col(MessageRow.created_at) < wanted.until)
    return conditions


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def encode_cursor(last: MessageView) -> str:
    """The cursor after ``last``: its creation time (microseconds) and id, base64url JSON."""
    micros = (last.created_at - _EPOCH) // _MICROSECOND
    text = json.dumps([micros, last.message_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor stands for.

    Raises:
        InvalidCursorError: Not a cursor :func:`encode_cursor` made.
    """
    refused = InvalidCursorError(
        f"cursor {cursor[:40]!r} is not one this API handed out: pass the next_cursor "
        "of the previous page unchanged, or leave it out to start from the newest"
    )
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        micros, message_id = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        position = _EPOCH + micros * _MICROSECOND
    except (ValueError, TypeError, UnicodeError, binascii.Error, OverflowError) as error:
        raise refused from error
    if isinstance(micros, bool) or not isinstance(micros, int) or not isinstance(message_id, str):
        raise refused
    return position, message_id
