"""The consent store's tables: apps, consents, and the transactional outbox.

Every timestamp column is :class:`UTCDateTime`: the Python side always sees aware UTC
datetimes, whatever the database keeps (SQLite has no time zones and drops ``tzinfo``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

from portability.wire.records import Category

__all__ = [
    "ALL_CATEGORIES_CSV",
    "TABLE_NAMES",
    "App",
    "Consent",
    "ConsentMode",
    "ConsentReplay",
    "ConsentStatus",
    "OutboxEvent",
    "OutboxKind",
    "ReplayState",
    "ReviewStatus",
    "Transfer",
    "TransferKind",
    "TransferState",
    "UTCDateTime",
]

# 64-bit on PostgreSQL; SQLite autoincrements only an INTEGER primary key (its 64-bit rowid).
_BIG_INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

ConsentMode = Literal["one_time", "ongoing"]
ConsentStatus = Literal["active", "revoked", "expired"]
OutboxKind = Literal["consent", "app", "notification"]
ReviewStatus = Literal["pending", "approved", "rejected"]
ReplayState = Literal["pending", "running", "done", "failed"]
TransferState = Literal["pending", "in_progress", "ready", "expired", "cancelled", "failed"]
TransferKind = Literal["archive", "snapshot"]

ALL_CATEGORIES_CSV = "profile,post,follow,activity,direct_message"
"""Every category in stored (comma-separated, ``CATEGORIES``) form."""

APPS_TABLE = "apps"
CONSENTS_TABLE = "consents"
OUTBOX_TABLE = "consent_outbox"
REPLAYS_TABLE = "consent_replays"
TRANSFERS_TABLE = "transfers"
TABLE_NAMES: tuple[str, ...] = (
    APPS_TABLE,
    CONSENTS_TABLE,
    OUTBOX_TABLE,
    REPLAYS_TABLE,
    TRANSFERS_TABLE,
)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back as an aware UTC datetime.

    PostgreSQL keeps it in ``timestamptz``; SQLite keeps the naive UTC wall time, which still
    sorts and compares correctly because every value is in the same zone.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # A naive value has no defined instant; guessing would silently shift it.
            raise ValueError(f"naive datetime {value!r} given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _utc_column(*, nullable: bool = False, index: bool = False) -> Any:
    """A fresh :class:`UTCDateTime` column (a Column object belongs to one table only)."""
    return Field(
        default=None if nullable else ...,
        sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index),
    )


class App(SQLModel, table=True):
    """A registered third-party app: where and how its deliveries are sent."""

    __tablename__ = APPS_TABLE

    app_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    webhook_url: str = Field(max_length=2048)
    # Before secrets were sealed (migration 0007): the clear secret. Emptied once sealed, when
    # the secrets live in sealed_signing_secrets (see consent.signing_secrets).
    signing_secret: str = Field(default="", max_length=128)
    version: int = Field(default=0, sa_type=_BIG_INT, description="Outbox id of this state.")
    created_at: datetime = _utc_column()
    use_case: str = Field(default="", max_length=2000, sa_column_kwargs={"server_default": ""})
    requested_scopes: str = Field(
        default=ALL_CATEGORIES_CSV,
        max_length=200,
        sa_column_kwargs={"server_default": ALL_CATEGORIES_CSV},
        description="Categories the app asks for, comma-separated, in CATEGORIES order.",
    )
    approved_scopes: str = Field(
        default=ALL_CATEGORIES_CSV,
        max_length=200,
        sa_column_kwargs={"server_default": ALL_CATEGORIES_CSV},
        description="Categories an operator approved (a subset of requested_scopes).",
    )
    review_status: str = Field(
        default="approved", max_length=16, sa_column_kwargs={"server_default": "approved"}
    )
    review_reason: str | None = Field(default=None, max_length=2000)
    enabled: bool = Field(default=True, sa_column_kwargs={"server_default": sa.true()})
    api_key_hash: str | None = Field(default=None, max_length=64, unique=True, index=True)
    previous_signing_secret: str | None = Field(default=None, max_length=128)  # as signing_secret
    # When the next previous secret stops signing (the earliest): the overlap sweep's question.
    previous_secret_expires_at: datetime | None = _utc_column(nullable=True)
    sealed_signing_secrets: str | None = Field(
        default=None,
        sa_type=sa.Text,
        description="JSON list, newest first, of the live secrets: each sealed, with the end "
        "of its overlap (None: the current one) and its rotation's idempotency key hash.",
    )
    delivery_mode: str = Field(
        default="webhook",
        max_length=16,
        sa_column_kwargs={"server_default": "webhook"},
        description="webhook (POSTed to webhook_url) or poll (read from the app's pull feed; "
        "webhook_url may then be empty). Migration 0010.",
    )


class Consent(SQLModel, table=True):
    """One user's authorisation for one app to receive some categories of their data."""

    __tablename__ = CONSENTS_TABLE
    __table_args__ = (
        # Never two active copies of one consent (see consent.copies): each would receive
        # every change. Migration 0006 creates it.
        sa.Index(
            "uq_consents_active_copy",
            "user_id",
            "app_id",
            "mode",
            "categories",
            unique=True,
            sqlite_where=sa.text("status = 'active'"),
            postgresql_where=sa.text("status = 'active'"),
        ),
    )

    consent_id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(index=True, max_length=200)
    app_id: str = Field(foreign_key=f"{APPS_TABLE}.app_id", index=True, max_length=64)
    categories: str = Field(max_length=200, description="Comma-separated, in CATEGORIES order.")
    mode: str = Field(max_length=16)
    status: str = Field(default="active", index=True, max_length=16)
    version: int = Field(default=0, sa_type=_BIG_INT, description="Outbox id of this state.")
    granted_at: datetime = _utc_column()
    expires_at: datetime | None = _utc_column(nullable=True, index=True)
    revoked_at: datetime | None = _utc_column(nullable=True)
    updated_at: datetime = _utc_column()
    removal_reason: str | None = Field(default=None, max_length=32)
    user_region: str | None = Field(default=None, max_length=2)
    # Snapshots of an ongoing consent (see schemas/consent.avsc): the current epoch, and where
    # its published snapshot hands over to the deltas (None until published).
    snapshot_epoch: int = Field(
        default=0, sa_type=_BIG_INT, sa_column_kwargs={"server_default": "0"}
    )
    snapshot_position: int | None = Field(default=None, sa_type=_BIG_INT)
    snapshot_last_page_offset: int | None = Field(default=None, sa_type=_BIG_INT)

    @property
    def category_list(self) -> list[Category]:
        """The categories as a list (the column keeps them comma-separated)."""
        return cast("list[Category]", self.categories.split(",")) if self.categories else []


class OutboxEvent(SQLModel, table=True):
    """A state change waiting to be published; ``id`` is the publish order and the version."""

    __tablename__ = OUTBOX_TABLE
    # The relay asks for "unpublished, in id order": this index answers it without a scan.
    __table_args__ = (
        sa.Index("ix_consent_outbox_published_at_id", "published_at", "id"),
        # Without AUTOINCREMENT SQLite may reuse the id of a deleted last row, and a version
        # must never go backwards.
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, sa_column=sa.Column(_BIG_INT, primary_key=True))
    kind: str = Field(max_length=16)
    key: str = Field(max_length=300)
    user_id: str | None = Field(default=None, max_length=200)
    payload: str = Field(sa_type=sa.Text)
    created_at: datetime = _utc_column()
    published_at: datetime | None = _utc_column(nullable=True)


class ConsentReplay(SQLModel, table=True):
    """An app's request to have a consent's deltas delivered again, and how it went.

    Kept in the store so that its state can be read on any later request and a restart of
    the API can tell the app that an unfinished replay was interrupted.
    """

    __tablename__ = REPLAYS_TABLE

    replay_id: str = Field(primary_key=True, max_length=64)
    consent_id: str = Field(foreign_key=f"{CONSENTS_TABLE}.consent_id", index=True, max_length=64)
    app_id: str = Field(index=True, max_length=64)
    requested_by: str = Field(max_length=16, description="Role of the caller: app or operator.")
    from_sequence: int | None = Field(default=None, sa_type=_BIG_INT)
    since: datetime | None = _utc_column(nullable=True)
    state: str = Field(default="pending", index=True, max_length=16)
    deltas_found: int = Field(default=0, sa_type=_BIG_INT)
    deltas_sent: int = Field(default=0, sa_type=_BIG_INT)
    requests: int = Field(default=0, sa_type=_BIG_INT)
    first_sequence: int | None = Field(default=None, sa_type=_BIG_INT)
    last_sequence: int | None = Field(default=None, sa_type=_BIG_INT)
    last_error: str | None = Field(default=None, max_length=2000)
    created_at: datetime = _utc_column()
    started_at: datetime | None = _utc_column(nullable=True)
    finished_at: datetime | None = _utc_column(nullable=True)


class Transfer(SQLModel, table=True):
    """A one-time transfer: the archive of a user's data an app asked for, and its state.

    ``pending`` until a transfer builder takes it, ``in_progress`` while the archive is
    written, then ``ready`` (downloadable until ``expires_at``), and ``expired`` after; or
    ``cancelled`` by the app, or ``failed`` with ``failure_reason``.
    """

    __tablename__ = TRANSFERS_TABLE

    transfer_id: str = Field(primary_key=True, max_length=64)
    consent_id: str = Field(foreign_key=f"{CONSENTS_TABLE}.consent_id", index=True, max_length=64)
    app_id: str = Field(index=True, max_length=64)
    user_id: str = Field(max_length=200)
    categories: str = Field(max_length=200, description="Comma-separated, CATEGORIES order.")
    kind: str = Field(
        default="archive",
        max_length=16,
        sa_column_kwargs={"server_default": "archive"},
        description="archive (one-time consent) or snapshot (ongoing consent's epoch).",
    )
    snapshot_epoch: int | None = Field(default=None, sa_type=_BIG_INT)
    state: str = Field(default="pending", index=True, max_length=16)
    failure_reason: str | None = Field(default=None, max_length=2000)
    archive_file: str | None = Field(default=None, max_length=300)
    size_bytes: int | None = Field(default=None, sa_type=_BIG_INT)
    sha256: str | None = Field(default=None, max_length=64)
    record_count: int | None = Field(default=None, sa_type=_BIG_INT)
    policy_version: str | None = Field(default=None, max_length=100)
    position: str | None = Field(default=None, max_length=200, description="partition:offset")
    created_at: datetime = _utc_column()
    started_at: datetime | None = _utc_column(nullable=True)
    ready_at: datetime | None = _utc_column(nullable=True)
    expires_at: datetime | None = _utc_column(nullable=True, index=True)
    finished_at: datetime | None = _utc_column(nullable=True)
