"""The message log's tables: each webhook message, each attempt at it, each record disclosed.

They live in the consent store's database (same engine, migrations 0008 and 0009) but belong
to this package: the delivery worker never writes them. It emits one ``delivery.log`` entry per
attempt, and the writer (:mod:`portability.messages.writer`) stores entries in batches, so
the worker's hot path never waits on a database. Rows hold ids, hashes and outcomes, never a
record's contents. Timestamps are :class:`~portability.consent.models.UTCDateTime`. Each
consent's ledger head as delivered (:class:`LedgerRow`) is kept here too, from the same entries.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from portability.consent.models import UTCDateTime

__all__ = [
    "ATTEMPTS_TABLE",
    "DELIVERED",
    "DISCLOSED_RECORDS_TABLE",
    "FAILING",
    "LEDGERS_TABLE",
    "MESSAGES_TABLE",
    "MESSAGE_TABLE_NAMES",
    "AttemptRow",
    "DisclosedRecordRow",
    "LedgerRow",
    "MessageRow",
]

MESSAGES_TABLE: Final = "delivery_messages"
ATTEMPTS_TABLE: Final = "delivery_attempts"
DISCLOSED_RECORDS_TABLE: Final = "disclosed_records"
LEDGERS_TABLE: Final = "consent_ledgers"
MESSAGE_TABLE_NAMES: Final[tuple[str, ...]] = (
    MESSAGES_TABLE,
    ATTEMPTS_TABLE,
    DISCLOSED_RECORDS_TABLE,
    LEDGERS_TABLE,
)

DELIVERED: Final = "delivered"
"""A message's outcome once any of its attempts was answered 2xx."""
FAILING: Final = "failing"
"""A message's outcome while no attempt has succeeded (yet)."""

# 64-bit on PostgreSQL; SQLite autoincrements only an INTEGER primary key (its 64-bit rowid).
_BIG_INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _utc_column(*, nullable: bool = False, index: bool = False) -> Any:
    """A fresh UTC timestamp column (a Column object belongs to one table only)."""
    return Field(
        default=None if nullable else ...,
        sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index),
    )


class MessageRow(SQLModel, table=True):
    """One webhook message (or test event): what it carried and how its attempts went.

    Created by the first attempt the writer stores; every later attempt updates ``attempts``,
    ``last_attempt_at`` and the outcome. ``created_at`` is the earliest attempt seen, which
    is also what retention counts from.
    """

    __tablename__ = MESSAGES_TABLE

    message_id: str = Field(primary_key=True, max_length=64)
    app_id: str = Field(index=True, max_length=64)
    consent_id: str = Field(index=True, max_length=64, description='"" for a test event.')
    user_id: str = Field(index=True, max_length=200, description='"" for a test event.')
    event_type: str = Field(max_length=64)
    endpoint_url: str = Field(max_length=2048)
    first_sequence: int | None = Field(default=None, sa_type=_BIG_INT)
    last_sequence: int | None = Field(default=None, sa_type=_BIG_INT)
    snapshot_epoch: int | None = Field(default=None, sa_type=_BIG_INT)
    removal_reason: str | None = Field(default=None, max_length=32)
    size: int = Field(sa_type=_BIG_INT, description="Body bytes.")
    body_sha256: str = Field(max_length=64)
    record_count: int = Field(sa_type=_BIG_INT)
    sources: str = Field(
        sa_type=sa.Text,
        description='JSON list of {"topic", "partition", "offset"}: where a resend reads.',
    )
    created_at: datetime = _utc_column(index=True)
    last_attempt_at: datetime = _utc_column()
    attempts: int = Field(sa_type=_BIG_INT)
    outcome: str = Field(max_length=16, description="delivered or failing.")
    delivered_at: datetime | None = _utc_column(nullable=True)
    last_status: int | None = Field(default=None)
    last_reason: str = Field(default="", sa_type=sa.Text)
    ledger: str | None = Field(
        default=None,
        sa_type=sa.Text,
        description='JSON {"before", "after", "events", "deltas", "pages", "removals"}: the '
        "consent's chain around the message, which a resend builds its body's ledger values "
        "from; null for a test event (and entries from a worker without ledgers).",
    )


class AttemptRow(SQLModel, table=True):
    """One attempt at one message, by the worker, a resend or a test event.

    Unique by (message, origin, attempt, time): the writer reads an entry twice after a
    restart, and the second insert must change nothing.
    """

    __tablename__ = ATTEMPTS_TABLE
    __table_args__ = (
        sa.UniqueConstraint(
            "message_id",
            "origin",
            "attempt",
            "attempted_at",
            name="uq_delivery_attempts_entry",
        ),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, sa_column=sa.Column(_BIG_INT, primary_key=True))
    message_id: str = Field(index=True, max_length=64)
    origin: str = Field(max_length=16, description="worker, resend or test.")
    attempt: int = Field()
    attempted_at: datetime = _utc_column(index=True)
    duration_ms: int = Field(sa_type=_BIG_INT)
    ok: bool = Field()
    status: int | None = Field(default=None)
    reason: str = Field(default="", sa_type=sa.Text)
    response_excerpt: str = Field(default="", sa_type=sa.Text)
    endpoint_url: str = Field(max_length=2048)


class DisclosedRecordRow(SQLModel, table=True):
    """One record that reached an app: written once, when its message is first delivered.

    What a user's disclosure report is made of (which app received which record, when, under
    which policy version). ``delta_id`` is empty for a snapshot page's record.
    """

    __tablename__ = DISCLOSED_RECORDS_TABLE

    message_id: str = Field(primary_key=True, max_length=64)
    category: str = Field(primary_key=True, max_length=32)
    record_id: str = Field(primary_key=True, max_length=200)
    delta_id: str = Field(primary_key=True, max_length=128)
    app_id: str = Field(index=True, max_length=64)
    consent_id: str = Field(index=True, max_length=64)
    user_id: str = Field(index=True, max_length=200)
    operation: str = Field(max_length=16, description="upsert, delete or snapshot.")
    sequence: int | None = Field(default=None, sa_type=_BIG_INT)
    policy_version: str = Field(max_length=100)
    event_type: str = Field(max_length=64)
    delivered_at: datetime = _utc_column(index=True)


class LedgerRow(SQLModel, table=True):
    """A consent's ledger as the platform delivered it: the chain's head after the latest
    message delivered (answered 2xx), and its counts (migration 0009).

    Written by the writer from ok entries, only forward: an entry whose ``events`` is not
    above the row's changes nothing, so entries of one consent stored out of order (they
    travel on partitions keyed by message id) never move the head back. Not swept by
    retention: an app may compare its head with this one however long ago it received.
    """

    __tablename__ = LEDGERS_TABLE

    consent_id: str = Field(primary_key=True, max_length=64)
    app_id: str = Field(index=True, max_length=64)
    user_id: str = Field(index=True, max_length=200)
    head: str = Field(max_length=64, description="The chain's value after its latest event.")
    events: int = Field(sa_type=_BIG_INT)
    deltas: int = Field(sa_type=_BIG_INT)
    pages: int = Field(sa_type=_BIG_INT)
    removals: int = Field(sa_type=_BIG_INT)
    last_message_id: str = Field(max_length=64)
    updated_at: datetime = _utc_column()
