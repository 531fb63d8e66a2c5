"""The ledger: each consent's chain head as delivered, and each message's chain values.

A new table, ``consent_ledgers`` (its model is
:class:`portability.messages.models.LedgerRow`), which the message log's writer fills from
the ``delivery.log`` entries of delivered messages; and a column ``delivery_messages.ledger``
with a message's chain values, from which a resend builds the body as it was first sent.
Existing rows are untouched: messages logged before have no ledger values.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_BIG_INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create ``consent_ledgers``; add ``delivery_messages.ledger``."""
    op.create_table(
        "consent_ledgers",
        sa.Column("consent_id", sa.String(64), primary_key=True),
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("head", sa.String(64), nullable=False),
        sa.Column("events", _BIG_INT, nullable=False),
        sa.Column("deltas", _BIG_INT, nullable=False),
        sa.Column("pages", _BIG_INT, nullable=False),
        sa.Column("removals", _BIG_INT, nullable=False),
        sa.Column("last_message_id", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    for column in ("app_id", "user_id"):
        op.create_index(f"ix_consent_ledgers_{column}", "consent_ledgers", [column])
    with op.batch_alter_table("delivery_messages") as table:
        table.add_column(sa.Column("ledger", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop the column and the table: the platform's heads are lost (apps keep theirs)."""
    with op.batch_alter_table("delivery_messages") as table:
        table.drop_column("ledger")
    op.drop_table("consent_ledgers")
