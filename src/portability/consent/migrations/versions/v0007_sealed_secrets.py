"""Sealed signing secrets: a column for the app's live secrets, each sealed.

Only the column is added here: sealing needs the secrets key, which a migration does not have
(every role migrates on start, and only the API and the workers hold the key). Apps whose
secrets are still in the clear columns are sealed by
:func:`portability.consent.signing_secrets.seal_stored_secrets`, which the API runs on start
and ``portability secrets reencrypt`` runs on demand; until then they are read, and published,
as before.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``apps.sealed_signing_secrets``."""
    with op.batch_alter_table("apps") as table:
        table.add_column(sa.Column("sealed_signing_secrets", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop the column (secrets sealed in it are lost: rotate every app's secret after)."""
    with op.batch_alter_table("apps") as table:
        table.drop_column("sealed_signing_secrets")
