"""Replays: an app's requests to have a consent's deltas delivered again.

A new table only; existing rows are untouched.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BIG_INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create ``consent_replays`` and the indexes its lookups use."""
    op.create_table(
        "consent_replays",
        sa.Column("replay_id", sa.String(64), primary_key=True),
        sa.Column(
            "consent_id", sa.String(64), sa.ForeignKey("consents.consent_id"), nullable=False
        ),
        sa.Column("app_id", sa.String(64), nullable=False),
        sa.Column("requested_by", sa.String(16), nullable=False),
        sa.Column("from_sequence", _BIG_INT, nullable=True),
        sa.Column("since", _utc(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("deltas_found", _BIG_INT, nullable=False),
        sa.Column("deltas_sent", _BIG_INT, nullable=False),
        sa.Column("requests", _BIG_INT, nullable=False),
        sa.Column("first_sequence", _BIG_INT, nullable=True),
        sa.Column("last_sequence", _BIG_INT, nullable=True),
        sa.Column("last_error", sa.String(2000), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("started_at", _utc(), nullable=True),
        sa.Column("finished_at", _utc(), nullable=True),
    )
    # Who has a replay in progress (per consent, per app) and what a restart must fail.
    op.create_index("ix_consent_replays_consent_id", "consent_replays", ["consent_id"])
    op.create_index("ix_consent_replays_app_id", "consent_replays", ["app_id"])
    op.create_index("ix_consent_replays_state", "consent_replays", ["state"])


def downgrade() -> None:
    """Drop the table (its indexes go with it)."""
    op.drop_table("consent_replays")
