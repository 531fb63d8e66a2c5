"""Snapshots of ongoing consents: the consent's epoch and hand-over, the transfer's kind.

New columns only, with defaults that keep existing rows meaning what they meant: consents
without a snapshot (epoch 0) and transfers that are archives.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_BIG_INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Add the snapshot columns to ``consents`` and ``transfers``."""
    with op.batch_alter_table("consents") as table:
        table.add_column(sa.Column("snapshot_epoch", _BIG_INT, nullable=False, server_default="0"))
        table.add_column(sa.Column("snapshot_position", _BIG_INT, nullable=True))
        table.add_column(sa.Column("snapshot_last_page_offset", _BIG_INT, nullable=True))
    with op.batch_alter_table("transfers") as table:
        table.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="archive"))
        table.add_column(sa.Column("snapshot_epoch", _BIG_INT, nullable=True))


def downgrade() -> None:
    """Drop the columns again."""
    with op.batch_alter_table("transfers") as table:
        table.drop_column("snapshot_epoch")
        table.drop_column("kind")
    with op.batch_alter_table("consents") as table:
        table.drop_column("snapshot_last_page_offset")
        table.drop_column("snapshot_position")
        table.drop_column("snapshot_epoch")
