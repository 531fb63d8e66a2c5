"""Migration 0006 on a store that holds what the new rules forbid (SQLite and PostgreSQL).

Before it a store could hold two active copies of a consent, and one-time consents whose
archive was built stayed active. Upgrading ends them as the service now would, each change
a consent state and an ``authorization.removed`` in the outbox, and adds the unique index:

- of two active copies the oldest grant stays; the newer one is revoked (``duplicate``);
- a one-time consent with a ready (or expired) archive ends (``completed``, status expired);
  a newer one-time copy of it then stays active, no longer a copy of an active consent;
- a one-time consent whose transfer failed stays active.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from portability.consent import init_schema
from portability.runtime import open_codec
from portability.settings import Settings
from portability.wire import SchemaName
from portability.wire.notifications import AUTHORIZATION_REMOVED, event_id

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
CONSENTS = {
    # consent_id: (user, mode, granted minutes after T0)
    "cns_kept": ("u1", "ongoing", 0),
    "cns_copy": ("u1", "ongoing", 5),
    "cns_built": ("u2", "one_time", 0),
    "cns_later": ("u2", "one_time", 9),
    "cns_failed": ("u3", "one_time", 0),
}
TRANSFERS = {
    "trf_built": ("cns_built", "u2", "ready"),
    "trf_failed": ("cns_failed", "u3", "failed"),
}


def store_at_0005(engine: Engine) -> None:
    init_schema(engine, "0005")
    apps = sa.table(
        "apps",
        *(sa.column(name) for name in ("app_id", "name", "webhook_url", "signing_secret")),
        sa.column("version"),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    consents = sa.table(
        "consents",
        *(sa.column(n) for n in ("consent_id", "user_id", "app_id", "categories", "mode")),
        *(sa.column(n) for n in ("status", "version")),
        *(sa.column(n, sa.DateTime(timezone=True)) for n in ("granted_at", "updated_at")),
    )
    transfers = sa.table(
        "transfers",
        *(sa.column(n) for n in ("transfer_id", "consent_id", "app_id", "user_id")),
        *(sa.column(n) for n in ("categories", "state")),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    with engine.begin() as connection:
        connection.execute(
            apps.insert().values(
                app_id="app_old",
                name="Old",
                webhook_url="https://old.example/h",
                signing_secret="whsec_b2xkb2xkb2xkb2xkb2xkb2xkb2xk",
                version=1,
                created_at=T0,
            )
        )
        for consent_id, (user, mode, minutes) in CONSENTS.items():
            granted = T0 + timedelta(minutes=minutes)
            connection.execute(
                consents.insert().values(
                    consent_id=consent_id,
                    user_id=user,
                    app_id="app_old",
                    categories="post",
                    mode=mode,
                    status="active",
                    version=2,
                    granted_at=granted,
                    updated_at=granted,
                )
            )
        for transfer_id, (consent_id, user, state) in TRANSFERS.items():
            connection.execute(
                transfers.insert().values(
                    transfer_id=transfer_id,
                    consent_id=consent_id,
                    app_id="app_old",
                    user_id=user,
                    categories="post",
                    state=state,
                    created_at=T0,
                )
            )


def rows(engine: Engine, query: str) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(row) for row in connection.execute(sa.text(query)).mappings()]


async def test_upgrade_ends_copies_and_used_up_one_time_consents(bare_engine: Engine) -> None:
    store_at_0005(bare_engine)

    init_schema(bare_engine, "0006")

    consents = {
        row["consent_id"]: (row["status"], row["removal_reason"], row["version"])
        for row in rows(bare_engine, "SELECT * FROM consents")
    }
    assert {cid: state[:2] for cid, state in consents.items()} == {
        "cns_kept": ("active", None),
        "cns_copy": ("revoked", "duplicate"),
        "cns_built": ("expired", "completed"),
        "cns_later": ("active", None),
        "cns_failed": ("active", None),
    }
    events = rows(bare_engine, "SELECT * FROM consent_outbox ORDER BY id")
    codec = await open_codec(Settings())
    told = {}
    for consent_event, notice in zip(events[::2], events[1::2], strict=True):
        record = json.loads(consent_event["payload"])
        assert (consent_event["kind"], notice["kind"]) == ("consent", "notification")
        assert record["version"] == consent_event["id"] == consents[record["consent_id"]][2]
        # What the relay will publish: the records encode with this build's schemas.
        decoded = codec.decode(SchemaName.CONSENT, codec.encode(SchemaName.CONSENT, record))
        assert (decoded["status"], decoded["removal_reason"]) == consents[record["consent_id"]][:2]
        event = json.loads(notice["payload"])
        assert event["event_id"] == event_id(
            AUTHORIZATION_REMOVED, record["consent_id"], record["version"]
        )
        codec.encode(SchemaName.NOTIFICATION, event)
        told[record["consent_id"]] = event["attributes"]["reason"]
    assert told == {"cns_copy": "duplicate", "cns_built": "completed"}


def test_the_upgraded_store_refuses_a_second_active_copy(bare_engine: Engine) -> None:
    store_at_0005(bare_engine)
    init_schema(bare_engine, "0006")
    indexes = {ix["name"]: ix for ix in sa.inspect(bare_engine).get_indexes("consents")}
    assert indexes["uq_consents_active_copy"]["unique"]

    insert = (
        "INSERT INTO consents (consent_id, user_id, app_id, categories, mode, status, version, "
        "granted_at, updated_at, snapshot_epoch) VALUES ('cns_new', 'u1', 'app_old', 'post', "
        "'ongoing', '{status}', 9, :at, :at, 0)"
    )
    with bare_engine.begin() as connection:  # not active: no conflict
        connection.execute(sa.text(insert.format(status="revoked")), {"at": T0})
    try:
        with bare_engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM consents WHERE consent_id = 'cns_new'"))
            connection.execute(sa.text(insert.format(status="active")), {"at": T0})
    except sa.exc.IntegrityError:
        pass
    else:
        raise AssertionError("a second active copy of cns_kept was stored")
