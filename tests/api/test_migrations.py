"""Schema migrations: an existing store upgrades without losing rows; head matches the models."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from portability.consent import ConsentService, init_schema
from portability.consent.models import TABLE_NAMES
from portability.consent.store import FIRST_REVISION
from portability.messages.models import MESSAGE_TABLE_NAMES

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def insert_previous_version_rows(engine: Engine) -> None:
    """Rows as the store before the API wrote them (no review, scopes, reasons)."""
    apps = sa.table(
        "apps",
        *(sa.column(name) for name in ("app_id", "name", "webhook_url", "signing_secret")),
        sa.column("version"),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    consents = sa.table(
        "consents",
        *(sa.column(name) for name in ("consent_id", "user_id", "app_id", "categories")),
        *(sa.column(name) for name in ("mode", "status", "version")),
        *(
            sa.column(name, sa.DateTime(timezone=True))
            for name in ("granted_at", "revoked_at", "updated_at")
        ),
    )
    with engine.begin() as connection:
        connection.execute(
            apps.insert().values(
                app_id="app_old",
                name="Old",
                webhook_url="https://old.example/h",
                signing_secret="whsec_b2xkb2xkb2xkb2xkb2xkb2xkb2xk",
                version=1,
                created_at=NOW,
            )
        )
        for consent_id, status in (("cns_active", "active"), ("cns_revoked", "revoked")):
            connection.execute(
                consents.insert().values(
                    consent_id=consent_id,
                    user_id="u1",
                    app_id="app_old",
                    categories="post,follow",
                    mode="ongoing",
                    status=status,
                    version=2,
                    granted_at=NOW,
                    revoked_at=NOW if status == "revoked" else None,
                    updated_at=NOW,
                )
            )


def test_upgrade_keeps_rows_of_the_previous_version(bare_engine: Engine) -> None:
    init_schema(bare_engine, FIRST_REVISION)
    insert_previous_version_rows(bare_engine)

    init_schema(bare_engine)

    service = ConsentService(bare_engine)
    app = service.get_app("app_old")
    assert (app.name, app.review_status, app.enabled) == ("Old", "approved", True)
    assert len(app.approved_scopes) == 5
    assert app.to_record()["signing_secrets"] == ["whsec_b2xkb2xkb2xkb2xkb2xkb2xkb2xk"]
    active = service.get_consent("cns_active")
    assert (active.status, active.categories, active.removal_reason) == (
        "active",
        ("post", "follow"),
        None,
    )
    assert active.granted_at == NOW
    revoked = service.get_consent("cns_revoked")
    assert (revoked.status, revoked.removal_reason) == ("revoked", "user_revoked")
    # The upgraded store works as usual: the old app still receives grants.
    granted = service.grant("u2", "app_old", ["post"], user_region="IE")
    assert granted.user_region == "IE"


def test_a_store_created_before_migrations_is_adopted(bare_engine: Engine) -> None:
    """Tables made by create_all (no version table) are taken as the first revision."""
    init_schema(bare_engine, FIRST_REVISION)
    insert_previous_version_rows(bare_engine)
    with bare_engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE alembic_version"))

    init_schema(bare_engine)
    init_schema(bare_engine)  # idempotent

    assert ConsentService(bare_engine).get_app("app_old").review_status == "approved"


def test_head_matches_the_models(engine: Engine) -> None:
    metadata = sa.MetaData()
    for name in (*TABLE_NAMES, *MESSAGE_TABLE_NAMES):
        SQLModel.metadata.tables[name].to_metadata(metadata)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert [d for d in differences if d[0] != "remove_table"] == []
