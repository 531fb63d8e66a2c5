"""One active copy of a consent; one-time consents used up by their archive.

- A partial unique index ``uq_consents_active_copy``: at most one active consent per user,
  app, mode and categories (see ``consent.copies``).
- Stores written before it may hold what the current code no longer allows, so it is put
  right first, the way the service does it now: each change is a new consent state and an
  ``authorization.removed`` in the outbox, so the pipeline and the apps hear of it.

  1. An active one-time consent whose archive was built (a transfer ready or expired) ends
     with reason ``completed`` (status expired).
  2. Of active copies still left, the oldest grant stays; each newer copy ends with reason
     ``duplicate`` (status revoked).

The records are built here as they are at this revision (not with the current views), so the
migration means the same thing whenever it runs.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from portability.consent._time import millis
from portability.consent.models import UTCDateTime
from portability.wire.notifications import authorization_removed
from portability.wire.topics import consent_key

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_INDEX = "uq_consents_active_copy"
_ACTIVE = sa.text("status = 'active'")

_consents = sa.table(
    "consents",
    sa.column("consent_id", sa.String),
    sa.column("user_id", sa.String),
    sa.column("app_id", sa.String),
    sa.column("categories", sa.String),
    sa.column("mode", sa.String),
    sa.column("status", sa.String),
    sa.column("version", sa.BigInteger),
    sa.column("granted_at", UTCDateTime()),
    sa.column("expires_at", UTCDateTime()),
    sa.column("revoked_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
    sa.column("removal_reason", sa.String),
    sa.column("snapshot_epoch", sa.BigInteger),
    sa.column("snapshot_position", sa.BigInteger),
    sa.column("snapshot_last_page_offset", sa.BigInteger),
)
_outbox = sa.table(
    "consent_outbox",
    sa.column("id", sa.BigInteger),
    sa.column("kind", sa.String),
    sa.column("key", sa.String),
    sa.column("user_id", sa.String),
    sa.column("payload", sa.Text),
    sa.column("created_at", UTCDateTime()),
)


def upgrade() -> None:
    """End what the new rules forbid (told through the outbox), then add the index."""
    bind = op.get_bind()
    now = datetime.now(UTC)
    for row in bind.execute(_used_up_one_time()).mappings().all():
        _end(bind, row, "completed", now)
    for row in bind.execute(_newer_copies()).mappings().all():
        _end(bind, row, "duplicate", now)
    op.create_index(
        _INDEX,
        "consents",
        ["user_id", "app_id", "mode", "categories"],
        unique=True,
        sqlite_where=_ACTIVE,
        postgresql_where=_ACTIVE,
    )


def downgrade() -> None:
    """Drop the index; the consents it ended stay ended."""
    op.drop_index(_INDEX, table_name="consents")


def _used_up_one_time() -> sa.Select[Any]:
    built = sa.text(
        "EXISTS (SELECT 1 FROM transfers t WHERE t.consent_id = consents.consent_id "
        "AND t.kind = 'archive' AND t.state IN ('ready', 'expired'))"
    )
    return (
        sa.select(_consents)
        .where(_consents.c.status == "active", _consents.c.mode == "one_time", built)
        .order_by(_consents.c.consent_id)
    )


def _newer_copies() -> sa.Select[Any]:
    older = _consents.alias("older")
    c = _consents.c
    has_older = (
        sa.select(sa.literal(1))
        .where(
            older.c.status == "active",
            older.c.user_id == c.user_id,
            older.c.app_id == c.app_id,
            older.c.mode == c.mode,
            older.c.categories == c.categories,
            sa.or_(
                older.c.granted_at < c.granted_at,
                sa.and_(older.c.granted_at == c.granted_at, older.c.consent_id < c.consent_id),
            ),
        )
        .exists()
    )
    return sa.select(_consents).where(c.status == "active", has_older).order_by(c.consent_id)


def _end(bind: sa.Connection, row: Any, reason: str, now: datetime) -> None:
    """End one consent as the service does: its new state and the app's notice, in order."""
    revoked = reason != "completed"
    status = "revoked" if revoked else "expired"
    revoked_at = now if revoked else row["revoked_at"]
    key = consent_key(row["user_id"], row["consent_id"]).decode()
    version = _append(bind, "consent", key, row["user_id"], now)
    record = {
        "consent_id": row["consent_id"],
        "user_id": row["user_id"],
        "app_id": row["app_id"],
        "categories": row["categories"].split(",") if row["categories"] else [],
        "mode": row["mode"],
        "status": status,
        "granted_at": row["granted_at"],
        "expires_at": row["expires_at"],
        "revoked_at": revoked_at,
        "version": version,
        "removal_reason": reason,
        "snapshot_epoch": row["snapshot_epoch"],
        "snapshot_position": row["snapshot_position"],
        "snapshot_last_page_offset": row["snapshot_last_page_offset"],
    }
    _fill(bind, version, record)
    bind.execute(
        _consents.update()
        .where(_consents.c.consent_id == row["consent_id"])
        .values(
            status=status,
            revoked_at=revoked_at,
            removal_reason=reason,
            updated_at=now,
            version=version,
        )
    )
    notice = authorization_removed(
        consent_id=row["consent_id"],
        app_id=row["app_id"],
        user_id=row["user_id"],
        reason=reason,  # type: ignore[arg-type]  # a literal of RemovalReason
        removed_at=now,
        version=version,
    )
    _fill(bind, _append(bind, "notification", row["consent_id"], row["user_id"], now), notice)


def _append(bind: sa.Connection, kind: str, key: str, user_id: str, now: datetime) -> int:
    """Insert an outbox row (its payload filled in once its id, the version, is known)."""
    # RETURNING: PostgreSQL, and SQLite since 3.35 (2021).
    insert = _outbox.insert().values(
        kind=kind, key=key, user_id=user_id, payload="", created_at=now
    )
    return int(bind.execute(insert.returning(_outbox.c.id)).scalar_one())


def _fill(bind: sa.Connection, outbox_id: int, record: Any) -> None:
    payload = json.dumps(record, default=_millis, separators=(",", ":"))
    bind.execute(_outbox.update().where(_outbox.c.id == outbox_id).values(payload=payload))


def _millis(value: object) -> object:
    if isinstance(value, datetime):
        return millis(value)
    raise TypeError(f"cannot put {type(value).__name__} in an outbox payload")
