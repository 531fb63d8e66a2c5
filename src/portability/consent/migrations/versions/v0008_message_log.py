"""The message log: webhook messages, their attempts, and the records they disclosed.

New tables only (their models are in :mod:`portability.messages.models`); existing rows are
untouched. The message log's writer fills them from the ``delivery.log`` topic.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_BIG_INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create ``delivery_messages``, ``delivery_attempts`` and ``disclosed_records``."""
    _create_messages()
    _create_attempts()
    _create_disclosed_records()


def _create_messages() -> None:
    op.create_table(
        "delivery_messages",
        sa.Column("message_id", sa.String(64), primary_key=True),
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("endpoint_url", sa.String(2048), nullable=False),
        sa.Column("first_sequence", _BIG_INT, nullable=True),
        sa.Column("last_sequence", _BIG_INT, nullable=True),
        sa.Column("snapshot_epoch", _BIG_INT, nullable=True),
        sa.Column("removal_reason", sa.String(32), nullable=True),
        sa.Column("size", _BIG_INT, nullable=False),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("record_count", _BIG_INT, nullable=False),
        sa.Column("sources", sa.Text(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("last_attempt_at", _utc(), nullable=False),
        sa.Column("attempts", _BIG_INT, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("delivered_at", _utc(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_reason", sa.Text(), nullable=False),
    )
    # An app's log (filtered by consent or user) and retention (by age).
    for column in ("app_id", "consent_id", "user_id", "created_at"):
        op.create_index(f"ix_delivery_messages_{column}", "delivery_messages", [column])


def _create_attempts() -> None:
    op.create_table(
        "delivery_attempts",
        sa.Column("id", _BIG_INT, primary_key=True),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("attempted_at", _utc(), nullable=False),
        sa.Column("duration_ms", _BIG_INT, nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("response_excerpt", sa.Text(), nullable=False),
        sa.Column("endpoint_url", sa.String(2048), nullable=False),
        # The writer may read an entry twice: the second insert is skipped on this key.
        sa.UniqueConstraint(
            "message_id", "origin", "attempt", "attempted_at", name="uq_delivery_attempts_entry"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_delivery_attempts_message_id", "delivery_attempts", ["message_id"])
    op.create_index("ix_delivery_attempts_attempted_at", "delivery_attempts", ["attempted_at"])


def _create_disclosed_records() -> None:
    op.create_table(
        "disclosed_records",
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        sa.Column("record_id", sa.String(200), nullable=False),
        sa.Column("delta_id", sa.String(128), nullable=False),
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("operation", sa.String(16), nullable=False),
        sa.Column("sequence", _BIG_INT, nullable=True),
        sa.Column("policy_version", sa.String(100), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("delivered_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("message_id", "category", "record_id", "delta_id"),
    )
    # A user's report (per user, per app, per consent) and retention (by delivery time).
    for column in ("app_id", "consent_id", "user_id", "delivered_at"):
        op.create_index(f"ix_disclosed_records_{column}", "disclosed_records", [column])


def downgrade() -> None:
    """Drop the three tables (their indexes go with them): the log is lost."""
    for table in ("disclosed_records", "delivery_attempts", "delivery_messages"):
        op.drop_table(table)
