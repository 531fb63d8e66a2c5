"""The API: app review, scopes, API keys, secret rotation; consent removal reason and region.

Every new column has a server default or is nullable, so existing rows survive: apps
registered before review existed stay approved for every category and enabled.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ALL = "profile,post,follow,activity,direct_message"


def upgrade() -> None:
    """Add the columns, then backfill removal reasons of consents that already ended.

    Plain ``ADD COLUMN`` (no table rebuild): SQLite supports it with a constant default, and
    rebuilding ``apps`` would trip the consents' foreign key.
    """
    for column in (
        sa.Column("use_case", sa.String(2000), nullable=False, server_default=""),
        sa.Column("requested_scopes", sa.String(200), nullable=False, server_default=_ALL),
        sa.Column("approved_scopes", sa.String(200), nullable=False, server_default=_ALL),
        sa.Column("review_status", sa.String(16), nullable=False, server_default="approved"),
        sa.Column("review_reason", sa.String(2000), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("api_key_hash", sa.String(64), nullable=True),
        sa.Column("previous_signing_secret", sa.String(128), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
    ):
        op.add_column("apps", column)
    op.create_index("ix_apps_api_key_hash", "apps", ["api_key_hash"], unique=True)
    op.add_column("consents", sa.Column("removal_reason", sa.String(32), nullable=True))
    op.add_column("consents", sa.Column("user_region", sa.String(2), nullable=True))
    op.execute(
        "UPDATE consents SET removal_reason = 'user_revoked' "
        "WHERE status = 'revoked' AND removal_reason IS NULL"
    )
    op.execute(
        "UPDATE consents SET removal_reason = 'expired' "
        "WHERE status = 'expired' AND removal_reason IS NULL"
    )


def downgrade() -> None:
    """Drop the added columns."""
    op.drop_column("consents", "user_region")
    op.drop_column("consents", "removal_reason")
    op.drop_index("ix_apps_api_key_hash", table_name="apps")
    for column in (
        "previous_secret_expires_at",
        "previous_signing_secret",
        "api_key_hash",
        "enabled",
        "review_reason",
        "review_status",
        "approved_scopes",
        "requested_scopes",
        "use_case",
    ):
        op.drop_column("apps", column)
