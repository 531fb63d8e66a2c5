"""One-time transfers: an app's requests for an archive of a user's data.

A new table only; existing rows are untouched.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BIG_INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create ``transfers`` and the indexes its lookups use."""
    op.create_table(
        "transfers",
        sa.Column("transfer_id", sa.String(64), primary_key=True),
        sa.Column(
            "consent_id", sa.String(64), sa.ForeignKey("consents.consent_id"), nullable=False
        ),
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("categories", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failure_reason", sa.String(2000), nullable=True),
        sa.Column("archive_file", sa.String(300), nullable=True),
        sa.Column("size_bytes", _BIG_INT, nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("record_count", _BIG_INT, nullable=True),
        sa.Column("policy_version", sa.String(100), nullable=True),
        sa.Column("position", sa.String(200), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("started_at", _utc(), nullable=True),
        sa.Column("ready_at", _utc(), nullable=True),
        sa.Column("expires_at", _utc(), nullable=True),
        sa.Column("finished_at", _utc(), nullable=True),
    )
    # Per consent (one unfinished at a time), per app, what builders take, what expires.
    op.create_index("ix_transfers_consent_id", "transfers", ["consent_id"])
    op.create_index("ix_transfers_app_id", "transfers", ["app_id"])
    op.create_index("ix_transfers_state", "transfers", ["state"])
    op.create_index("ix_transfers_expires_at", "transfers", ["expires_at"])


def downgrade() -> None:
    """Drop the table (its indexes go with it)."""
    op.drop_table("transfers")
