"""Signing secrets in the consent store: sealed at rest, bounded and idempotent rotation,
stores from before sealing sealed on demand, and the sealing key rotated.

Every test runs on SQLite and on PostgreSQL (the ``engine`` fixture).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from portability.consent import ConsentService
from portability.consent.errors import ConflictError
from portability.consent.models import App, OutboxEvent
from portability.consent.resealing import (
    seal_clear_secrets,
    seal_stored_secrets,
    sealing_census,
)
from portability.consent.signing_secrets import MAX_LIVE_SECRETS, RotationLimitError
from portability.sealing import SecretsKey, SecretsKeys, UnsealError

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
HOUR = 3600.0


@pytest.fixture
def k1() -> SecretsKey:
    return SecretsKey.generate("k1")


@pytest.fixture
def keys(k1: SecretsKey) -> SecretsKeys:
    return SecretsKeys([k1], "the test ring")


@pytest.fixture
def service(engine: Engine, keys: SecretsKeys) -> ConsentService:
    return ConsentService(engine, secrets=keys)


def dump_store(engine: Engine) -> str:
    """Every value of every row of the apps and outbox tables, as text: what a backup holds."""
    with engine.connect() as connection:
        rows = [
            *connection.execute(sa.text("SELECT * FROM apps")).all(),
            *connection.execute(sa.text("SELECT * FROM consent_outbox")).all(),
        ]
    return "\n".join(repr(tuple(row)) for row in rows)


def published_app(engine: Engine, app_id: str) -> dict[str, object]:
    query = (
        select(OutboxEvent)
        .where(col(OutboxEvent.kind) == "app", col(OutboxEvent.key) == app_id)
        .order_by(col(OutboxEvent.id).desc())
    )
    with Session(engine) as session:
        event = session.exec(query).first()
        assert event is not None
        record: dict[str, object] = json.loads(event.payload)
        return record


def opened(keys: SecretsKeys, record: dict[str, object]) -> list[str]:
    sealed = record["sealed_signing_secrets"]
    assert isinstance(sealed, list)
    return [keys.open(value, str(record["app_id"])) for value in sealed]


def test_the_store_and_its_outbox_hold_no_secret(
    engine: Engine, service: ConsentService, keys: SecretsKeys
) -> None:
    app = service.register_app("R", "https://r.example/h", "app_r")
    _, rotation = service.rotate_secret("app_r", HOUR)
    secrets = [app.signing_secret, rotation.secret]

    backup = dump_store(engine)

    assert "whsec_" not in backup
    for secret in secrets:
        assert secret.removeprefix("whsec_") not in backup
        raw = base64.b64decode(secret.removeprefix("whsec_"))
        assert raw.hex() not in backup
        assert repr(raw) not in backup
    record = published_app(engine, "app_r")
    assert record["signing_secrets"] == []
    assert opened(keys, record) == [rotation.secret, app.signing_secret]


def test_rotating_twice_at_once_keeps_every_secret_in_its_overlap(
    engine: Engine, service: ConsentService
) -> None:
    first = service.register_app("R", "https://r.example/h", "app_r").signing_secret
    view, one = service.rotate_secret("app_r", HOUR, now=NOW)
    view, two = service.rotate_secret("app_r", HOUR, now=NOW + timedelta(seconds=1))

    assert view.signing_secrets == [two.secret, one.secret, first]
    assert view.secrets.previous_ends == (
        NOW + timedelta(seconds=1 + HOUR),
        NOW + timedelta(seconds=HOUR),
    )
    assert view.previous_secret_expires_at == NOW + timedelta(seconds=1 + HOUR)
    # The first secret stops at the end of its own overlap, not at the second rotation.
    [ended] = service.end_secret_overlaps(now=NOW + timedelta(seconds=HOUR))
    assert ended.signing_secrets == [two.secret, one.secret]


def test_a_rotation_beyond_three_live_secrets_is_refused_until_the_oldest_ends(
    service: ConsentService,
) -> None:
    service.register_app("R", "https://r.example/h", "app_r")
    service.rotate_secret("app_r", HOUR, now=NOW)
    service.rotate_secret("app_r", HOUR, now=NOW + timedelta(minutes=1))

    with pytest.raises(RotationLimitError) as refused:
        service.rotate_secret("app_r", HOUR, now=NOW + timedelta(minutes=2))

    assert refused.value.retry_at == NOW + timedelta(seconds=HOUR)
    assert f"already has {MAX_LIVE_SECRETS} signing secrets" in str(refused.value)
    assert len(service.get_app("app_r").signing_secrets) == MAX_LIVE_SECRETS
    # Once the oldest is past its overlap it makes room, sweep or no sweep.
    view, _ = service.rotate_secret("app_r", HOUR, now=NOW + timedelta(seconds=HOUR))
    assert len(view.signing_secrets) == MAX_LIVE_SECRETS


def test_overlap_zero_drops_every_previous_secret(service: ConsentService) -> None:
    service.register_app("R", "https://r.example/h", "app_r")
    service.rotate_secret("app_r", HOUR, now=NOW)
    view, rotation = service.rotate_secret("app_r", 0, now=NOW)
    assert view.signing_secrets == [rotation.secret]
    assert view.previous_secret_expires_at is None


def test_a_rotation_repeated_with_its_idempotency_key_changes_nothing(
    engine: Engine, service: ConsentService
) -> None:
    first = service.register_app("R", "https://r.example/h", "app_r").signing_secret
    view, rotation = service.rotate_secret("app_r", HOUR, now=NOW, idempotency_key="once")
    published = published_app(engine, "app_r")

    again, repeated = service.rotate_secret("app_r", HOUR, now=NOW, idempotency_key="once")

    assert (repeated.secret, repeated.repeated, rotation.repeated) == (rotation.secret, True, False)
    assert again.signing_secrets == view.signing_secrets == [rotation.secret, first]
    assert published_app(engine, "app_r") == published  # nothing new was published
    # Once a later rotation replaced its secret, the old key is refused, not replayed.
    service.rotate_secret("app_r", HOUR, now=NOW, idempotency_key="twice")
    with pytest.raises(ConflictError, match="a later rotation replaced"):
        service.rotate_secret("app_r", HOUR, now=NOW, idempotency_key="once")


def test_an_idempotency_key_is_kept_only_hashed(engine: Engine, service: ConsentService) -> None:
    service.register_app("R", "https://r.example/h", "app_r")
    service.rotate_secret("app_r", HOUR, idempotency_key="rotate-2030-06-01")
    assert "rotate-2030-06-01" not in dump_store(engine)


def insert_clear_app(engine: Engine, app_id: str, secret: str, previous: str | None) -> None:
    """A row as a store from before sealing holds it (clear columns, no sealed ones)."""
    with Session(engine) as session, session.begin():
        session.add(
            App(
                app_id=app_id,
                name="Old",
                webhook_url="https://old.example/h",
                signing_secret=secret,
                previous_signing_secret=previous,
                previous_secret_expires_at=None if previous is None else NOW,
                created_at=NOW,
                version=1,
            )
        )


def test_a_store_from_before_sealing_is_sealed_and_republished(
    engine: Engine, keys: SecretsKeys
) -> None:
    old, previous = "whsec_b2xkb2xkb2xkb2xkb2xkb2xkb2xk", "whsec_cHJldmlvdXNwcmV2aW91cw=="
    insert_clear_app(engine, "app_old", old, previous)
    # Until sealed it reads (and would publish) as before.
    assert ConsentService(engine).get_app("app_old").signing_secrets == [old, previous]

    report = seal_clear_secrets(engine, keys)

    assert (report.changed, report.failed) == (["app_old"], [])
    assert "whsec_" not in dump_store(engine)
    service = ConsentService(engine, secrets=keys)
    view = service.get_app("app_old")
    assert view.signing_secrets == [old, previous]
    assert view.previous_secret_expires_at == NOW
    assert opened(keys, published_app(engine, "app_old")) == [old, previous]
    # Idempotent: nothing left in the clear, nothing done.
    assert seal_clear_secrets(engine, keys).changed == []
    assert sealing_census(engine) == {"k1": 2}


def test_the_overlap_sweep_keeps_a_clear_store_clear_without_a_key(engine: Engine) -> None:
    insert_clear_app(engine, "app_old", "whsec_b2xkb2xkb2xkb2xkb2xkb2xkb2xk", "whsec_cHJldg==")
    [ended] = ConsentService(engine).end_secret_overlaps(now=NOW)
    # The sweep holds no key: it drops the ended secret and seals nothing with a wrong one.
    assert ended.signing_secrets == ["whsec_b2xkb2xkb2xkb2xkb2xkb2xkb2xk"]
    assert ended.to_record()["signing_secrets"] == ["whsec_b2xkb2xkb2xkb2xkb2xkb2xkb2xk"]


def test_rotating_the_sealing_key(engine: Engine, service: ConsentService, k1: SecretsKey) -> None:
    first = service.register_app("R", "https://r.example/h", "app_r").signing_secret
    _, rotation = service.rotate_secret("app_r", HOUR)
    new = SecretsKey.generate("k2")
    ring = SecretsKeys([new, k1], "new first, old after")

    report = seal_stored_secrets(engine, ring, renew=True)

    assert (report.sealed_key_id, report.changed, report.failed) == ("k2", ["app_r"], [])
    assert sealing_census(engine) == {"k2": 2}
    only_new = SecretsKeys([new], "the new key alone")
    assert ConsentService(engine, secrets=only_new).get_app("app_r").signing_secrets == [
        rotation.secret,
        first,
    ]
    assert opened(only_new, published_app(engine, "app_r")) == [rotation.secret, first]
    # A ring without the key that sealed them cannot re-seal: named, and left as it is.
    stranger = SecretsKeys([SecretsKey.generate("k3")], "a stranger's ring")
    failed = seal_stored_secrets(engine, stranger, renew=True)
    assert failed.changed == []
    [(app_id, reason)] = failed.failed
    assert app_id == "app_r"
    assert "sealed with key 'k2', which a stranger's ring does not hold (it holds k3)" in reason
    with pytest.raises(UnsealError):
        ConsentService(engine, secrets=stranger).get_app("app_r").signing_secrets  # noqa: B018
