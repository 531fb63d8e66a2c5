"""ConsentService on SQLite and PostgreSQL: state changes and their outbox rows."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from portability.consent import (
    AppView,
    Consent,
    ConsentService,
    ConsentView,
    InvalidRequestError,
    NotFoundError,
    OutboxEvent,
)
from portability.consent import outbox_rows as service_module
from portability.wire import CATEGORIES
from portability.wire.notifications import AUTHORIZATION_REMOVED, event_id

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def outbox(engine: Engine) -> list[OutboxEvent]:
    with Session(engine) as session:
        return list(session.exec(select(OutboxEvent).order_by(col(OutboxEvent.id))))


def payload(event: OutboxEvent) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(event.payload)
    return decoded


def millis(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


# --- apps ---------------------------------------------------------------------------------


def test_register_app_writes_app_and_outbox_row(service: ConsentService, engine: Engine) -> None:
    app = service.register_app("Recipient", "https://r.example/hook")

    assert re.fullmatch(r"app_[0-9a-f]{12}", app.app_id)
    assert app.signing_secret.startswith("whsec_")
    assert len(base64.b64decode(app.signing_secret.removeprefix("whsec_"))) == 24
    assert app.created_at.tzinfo is UTC
    assert service.get_app(app.app_id) == app
    assert service.list_apps() == [app]
    [event] = outbox(engine)
    assert (event.kind, event.key, event.user_id, event.published_at) == (
        "app",
        app.app_id,
        None,
        None,
    )
    assert event.id == app.version
    record = payload(event)
    [sealed] = record.pop("sealed_signing_secrets")
    assert record == {
        "app_id": app.app_id,
        "name": "Recipient",
        "webhook_url": "https://r.example/hook",
        "signing_secrets": [],
        "enabled": True,
        "version": event.id,
        "delivery_mode": "webhook",
    }
    # The outbox holds the secret sealed only (see tests/consent/test_sealed_secrets.py).
    assert sealed.startswith("sealed:v1:")
    assert "whsec_" not in sealed


def test_app_view_repr_hides_the_secret(app: AppView) -> None:
    assert app.signing_secret not in repr(app)


def test_register_app_with_chosen_id_refuses_a_duplicate(
    service: ConsentService, engine: Engine
) -> None:
    service.register_app("One", "http://localhost:8080/hook", app_id="app_chosen")

    with pytest.raises(InvalidRequestError, match="'app_chosen' is already registered"):
        service.register_app("Two", "https://two.example/hook", app_id="app_chosen")
    assert len(outbox(engine)) == 1


@pytest.mark.parametrize(
    ("name", "url", "app_id", "message"),
    [
        ("", "https://r.example/h", None, "name must be"),
        ("R", "ftp://r.example/h", None, "must be an http"),
        ("R", "https:///no-host", None, "must be an http"),
        ("R", "https://r.example/h", "has space", "app_id 'has space' must be"),
    ],
)
def test_register_app_rejects_bad_fields(
    service: ConsentService, name: str, url: str, app_id: str | None, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        service.register_app(name, url, app_id=app_id)


def test_get_unknown_app_is_not_found(service: ConsentService) -> None:
    with pytest.raises(NotFoundError, match="no app 'app_missing'") as raised:
        service.get_app("app_missing")
    assert isinstance(raised.value, LookupError)


# --- grant --------------------------------------------------------------------------------


def test_grant_writes_consent_and_outbox_row(
    service: ConsentService, engine: Engine, app: AppView
) -> None:
    expires = NOW + timedelta(days=30)
    consent = service.grant(
        "user-1", app.app_id, ["post", "profile", "post"], expires_at=expires, now=NOW
    )

    assert re.fullmatch(r"cns_[0-9a-f]{16}", consent.consent_id)
    assert consent.categories == ("profile", "post")  # deduplicated, in CATEGORIES order
    assert (consent.mode, consent.status, consent.is_active) == ("ongoing", "active", True)
    assert (consent.granted_at, consent.updated_at, consent.expires_at) == (NOW, NOW, expires)
    assert consent.revoked_at is None
    assert service.get_consent(consent.consent_id) == consent
    [_, event] = outbox(engine)  # the app's row, then the consent's
    assert (event.kind, event.key, event.user_id) == (
        "consent",
        f"user-1/{consent.consent_id}",
        "user-1",
    )
    assert event.id == consent.version
    assert payload(event) == {
        "consent_id": consent.consent_id,
        "user_id": "user-1",
        "app_id": app.app_id,
        "categories": ["profile", "post"],
        "mode": "ongoing",
        "status": "active",
        "granted_at": millis(NOW),
        "expires_at": millis(expires),
        "revoked_at": None,
        "version": consent.version,
        "removal_reason": None,
        "snapshot_epoch": 0,  # the service grants without a snapshot unless asked
        "snapshot_position": None,
        "snapshot_last_page_offset": None,
    }


def test_grant_all_expands_to_every_category(service: ConsentService, app: AppView) -> None:
    consent = service.grant("user-1", app.app_id, ["activity", "all"], mode="one_time")

    assert consent.categories == CATEGORIES
    assert consent.mode == "one_time"


def test_grant_keeps_aware_utc_at_millisecond_precision(
    service: ConsentService, app: AppView
) -> None:
    paris = timezone(timedelta(hours=1))
    local_now = datetime(2025, 3, 1, 13, 0, 0, 123456, tzinfo=paris)

    consent = service.grant("user-1", app.app_id, ["post"], now=local_now)

    expected = datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
    stored = service.get_consent(consent.consent_id)
    assert consent.granted_at == stored.granted_at == expected
    assert stored.granted_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("categories", "message"),
    [
        (["post", "photos"], r"unknown category 'photos': use any of profile, post, .* 'all'"),
        ([], "categories is empty: grant at least one, any of profile"),
        ("post", r"categories must be a list such as \['post'\]"),
    ],
)
def test_grant_rejects_bad_categories(
    service: ConsentService, engine: Engine, app: AppView, categories: Any, message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        service.grant("user-1", app.app_id, categories)
    assert service.list_consents() == []
    assert len(outbox(engine)) == 1  # only the app's


def test_grant_rejects_bad_mode_and_expiry(service: ConsentService, app: AppView) -> None:
    with pytest.raises(InvalidRequestError, match="unknown mode 'forever': use one of one_time"):
        service.grant("user-1", app.app_id, ["post"], mode="forever")
    with pytest.raises(InvalidRequestError, match="is not after now"):
        service.grant("user-1", app.app_id, ["post"], expires_at=NOW, now=NOW)
    with pytest.raises(InvalidRequestError, match="expires_at must be timezone-aware"):
        service.grant("user-1", app.app_id, ["post"], expires_at=datetime(2999, 1, 1))  # noqa: DTZ001
    with pytest.raises(InvalidRequestError, match="user_id must be"):
        service.grant("", app.app_id, ["post"])


def test_grant_for_unknown_app_is_not_found_and_writes_nothing(
    service: ConsentService, engine: Engine
) -> None:
    with pytest.raises(NotFoundError, match="no app 'app_nope': register it first"):
        service.grant("user-1", "app_nope", ["post"])
    assert service.list_consents() == []
    assert outbox(engine) == []


def test_outbox_row_rolls_back_with_a_failed_change(
    service: ConsentService, engine: Engine, app: AppView, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The outbox row is flushed before the change fails: the rollback must take both."""

    def fail(record: object) -> str:
        raise RuntimeError("crash after the outbox flush")

    monkeypatch.setattr(service_module, "outbox_payload", fail)
    with pytest.raises(RuntimeError, match="crash after the outbox flush"):
        service.grant("user-1", app.app_id, ["post"])

    assert service.list_consents() == []
    assert [event.kind for event in outbox(engine)] == ["app"]


# --- revoke, list, expire -----------------------------------------------------------------


def test_revoke_publishes_once_and_is_idempotent(
    service: ConsentService, engine: Engine, app: AppView
) -> None:
    granted = service.grant("user-1", app.app_id, ["post"], now=NOW)
    later = NOW + timedelta(minutes=5)

    revoked = service.revoke(granted.consent_id, now=later)
    again = service.revoke(granted.consent_id, now=later + timedelta(minutes=1))

    assert (revoked.status, revoked.revoked_at, revoked.updated_at) == ("revoked", later, later)
    assert revoked.version > granted.version
    assert again == revoked
    events = outbox(engine)
    assert [event.kind for event in events] == ["app", "consent", "consent", "notification"]
    state, notification = events[-2], events[-1]
    assert payload(state)["status"] == "revoked"
    assert payload(state)["revoked_at"] == millis(later)
    assert payload(state)["version"] == revoked.version == state.id
    # In the same transaction: the app hears of the removal exactly when it is committed.
    assert (notification.key, notification.user_id) == (granted.consent_id, "user-1")
    assert payload(notification) == {
        "event_id": event_id(AUTHORIZATION_REMOVED, granted.consent_id, revoked.version),
        "event_type": AUTHORIZATION_REMOVED,
        "consent_id": granted.consent_id,
        "app_id": app.app_id,
        "user_id": "user-1",
        "occurred_at": millis(later),
        "attributes": {"reason": "user_revoked"},
    }


def test_revoke_unknown_consent_is_not_found(service: ConsentService) -> None:
    with pytest.raises(NotFoundError, match="no consent 'cns_missing'"):
        service.revoke("cns_missing")


def test_list_consents_filters(service: ConsentService, app: AppView) -> None:
    other = service.register_app("Other", "https://other.example/hook")
    first = service.grant("user-1", app.app_id, ["post"], now=NOW)
    second = service.grant("user-1", other.app_id, ["profile"], now=NOW + timedelta(seconds=1))
    third = service.grant("user-2", app.app_id, ["follow"], now=NOW + timedelta(seconds=2))
    revoked = service.revoke(second.consent_id, now=NOW + timedelta(seconds=3))

    assert service.list_consents() == [first, revoked, third]
    assert service.list_consents(user_id="user-1") == [first, revoked]
    assert service.list_consents(app_id=app.app_id) == [first, third]
    assert service.list_consents(user_id="user-1", status="active") == [first]
    assert service.list_consents(status="revoked") == [revoked]
    with pytest.raises(InvalidRequestError, match="unknown status 'gone'"):
        service.list_consents(status="gone")


def test_expire_due_expires_only_what_passed(
    service: ConsentService, engine: Engine, app: AppView
) -> None:
    soon = service.grant(
        "user-1", app.app_id, ["post"], expires_at=NOW + timedelta(hours=1), now=NOW
    )
    late = service.grant(
        "user-2", app.app_id, ["post"], expires_at=NOW + timedelta(days=1), now=NOW
    )
    never = service.grant("user-3", app.app_id, ["post"], now=NOW)
    rows_before = len(outbox(engine))

    at = NOW + timedelta(hours=1)  # exactly at the expiry: it has expired
    expired = service.expire_due(now=at)

    assert [view.consent_id for view in expired] == [soon.consent_id]
    assert (expired[0].status, expired[0].updated_at, expired[0].revoked_at) == (
        "expired",
        at,
        None,
    )
    assert service.get_consent(soon.consent_id) == expired[0]
    assert service.get_consent(late.consent_id).status == "active"
    assert service.get_consent(never.consent_id).status == "active"
    events = outbox(engine)
    assert len(events) == rows_before + 2  # the state and the app's removal notification
    assert payload(events[-2])["status"] == "expired"
    assert payload(events[-1])["attributes"] == {"reason": "expired"}
    assert service.expire_due(now=at) == []
    # Revoking what already expired changes nothing and publishes nothing.
    assert service.revoke(soon.consent_id, now=at) == expired[0]
    assert len(outbox(engine)) == rows_before + 2


def test_versions_grow_per_consent_across_changes(
    service: ConsentService, engine: Engine, app: AppView
) -> None:
    views: list[ConsentView] = [
        service.grant(user, app.app_id, ["post"], now=NOW) for user in ("a", "b", "c")
    ]
    views.append(service.revoke(views[0].consent_id, now=NOW + timedelta(seconds=1)))

    assert [view.version for view in views] == sorted(view.version for view in views)
    with Session(engine) as session:
        stored = session.get(Consent, views[0].consent_id)
        assert stored is not None
        assert stored.version == views[-1].version
        assert stored.category_list == ["post"]
