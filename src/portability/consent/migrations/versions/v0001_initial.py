"""The consent store as it was before the API: apps, consents and the outbox.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BIG_INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the three tables and their indexes."""
    op.create_table(
        "apps",
        sa.Column("app_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("webhook_url", sa.String(2048), nullable=False),
        sa.Column("signing_secret", sa.String(128), nullable=False),
        sa.Column("version", _BIG_INT, nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
    )
    op.create_table(
        "consents",
        sa.Column("consent_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("app_id", sa.String(64), sa.ForeignKey("apps.app_id"), nullable=False),
        sa.Column("categories", sa.String(200), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", _BIG_INT, nullable=False),
        sa.Column("granted_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=True),
        sa.Column("revoked_at", _utc(), nullable=True),
        sa.Column("updated_at", _utc(), nullable=False),
    )
    op.create_index("ix_consents_user_id", "consents", ["user_id"])
    op.create_index("ix_consents_app_id", "consents", ["app_id"])
    op.create_index("ix_consents_status", "consents", ["status"])
    op.create_index("ix_consents_expires_at", "consents", ["expires_at"])
    op.create_table(
        "consent_outbox",
        sa.Column("id", _BIG_INT, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("published_at", _utc(), nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_consent_outbox_published_at_id", "consent_outbox", ["published_at", "id"])


def downgrade() -> None:
    """Drop everything."""
    op.drop_table("consent_outbox")
    op.drop_table("consents")
    op.drop_table("apps")
