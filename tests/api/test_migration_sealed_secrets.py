"""Migration 0007 and the sealing pass: a store whose secrets are in the clear ends up with
none in the clear, the same secrets signing, and the apps republished sealed.

On SQLite and PostgreSQL (``bare_engine``), from the revision before sealing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from portability.consent import ConsentService, init_schema
from portability.consent.resealing import seal_clear_secrets
from portability.sealing import SecretsKey, SecretsKeys

BEFORE_SEALING = "0006"
NOW = datetime(2030, 1, 1, tzinfo=UTC)
CURRENT = "whsec_Y3VycmVudGN1cnJlbnRjdXJyZW50"
PREVIOUS = "whsec_cHJldmlvdXNwcmV2aW91c3ByZXZp"


def insert_clear_app(engine: Engine) -> None:
    """An app mid-rotation as the store kept it before sealing: both secrets in the clear."""
    apps = sa.table(
        "apps",
        *(sa.column(name) for name in ("app_id", "name", "webhook_url", "signing_secret")),
        sa.column("previous_signing_secret"),
        sa.column("previous_secret_expires_at", sa.DateTime(timezone=True)),
        sa.column("version"),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    expires = NOW + timedelta(hours=1)
    with engine.begin() as connection:
        connection.execute(
            apps.insert().values(
                app_id="app_old",
                name="Old",
                webhook_url="https://old.example/h",
                signing_secret=CURRENT,
                previous_signing_secret=PREVIOUS,
                # SQLite keeps naive UTC (see UTCDateTime); PostgreSQL an aware time.
                previous_secret_expires_at=expires.replace(tzinfo=None)
                if engine.dialect.name == "sqlite"
                else expires,
                version=1,
                created_at=NOW.replace(tzinfo=None) if engine.dialect.name == "sqlite" else NOW,
            )
        )


def everything(engine: Engine) -> str:
    with engine.connect() as connection:
        rows = [
            *connection.execute(sa.text("SELECT * FROM apps")).all(),
            *connection.execute(sa.text("SELECT * FROM consent_outbox")).all(),
        ]
    return "\n".join(repr(tuple(row)) for row in rows)


def test_a_clear_store_is_migrated_and_sealed(bare_engine: Engine) -> None:
    init_schema(bare_engine, BEFORE_SEALING)
    insert_clear_app(bare_engine)
    keys = SecretsKeys([SecretsKey.generate("k1")], "the test ring")

    init_schema(bare_engine)
    # Migrated but not sealed yet: read, and published, as before.
    assert ConsentService(bare_engine).get_app("app_old").signing_secrets == [CURRENT, PREVIOUS]
    report = seal_clear_secrets(bare_engine, keys)

    assert report.changed == ["app_old"]
    assert "whsec_" not in everything(bare_engine)
    view = ConsentService(bare_engine, secrets=keys).get_app("app_old")
    assert view.signing_secrets == [CURRENT, PREVIOUS]
    assert view.previous_secret_expires_at == NOW + timedelta(hours=1)
    with bare_engine.connect() as connection:
        payload = connection.execute(
            sa.text("SELECT payload FROM consent_outbox WHERE kind = 'app' ORDER BY id DESC")
        ).scalar_one()
    record = json.loads(payload)
    assert record["signing_secrets"] == []
    assert [keys.open(s, "app_old") for s in record["sealed_signing_secrets"]] == [
        CURRENT,
        PREVIOUS,
    ]
