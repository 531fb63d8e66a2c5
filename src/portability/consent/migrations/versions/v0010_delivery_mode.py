"""Delivery mode: an app may read its events from a pull feed instead of taking webhooks.

Adds ``apps.delivery_mode`` (``webhook`` or ``poll``), ``webhook`` for every existing app,
which keeps receiving as before. A poll-mode app needs no webhook URL (it is then ``""``).
The apps topic carries the mode too (``App.delivery_mode`` in app.avsc, default
``webhook``); each app's next record publishes it.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``apps.delivery_mode``, ``webhook`` for every existing app."""
    with op.batch_alter_table("apps") as table:
        table.add_column(
            sa.Column("delivery_mode", sa.String(16), nullable=False, server_default="webhook")
        )


def downgrade() -> None:
    """Drop the column: every app is a webhook app again (a poll app without a URL cannot
    receive until it sets one)."""
    with op.batch_alter_table("apps") as table:
        table.drop_column("delivery_mode")
