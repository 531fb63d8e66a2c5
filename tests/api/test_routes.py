"""The API's routes on SQLite and PostgreSQL: apps, review, consents, status, errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from starlette.testclient import TestClient

from api.api_helpers import OPERATOR, PLATFORM, RegisteredApp, grant_body, registration
from portability.api import DeliveryStatusBoard
from portability.consent import ConsentService, OutboxEvent
from portability.consent.regions import SERVED_REGIONS
from portability.sealing import SecretsKeys
from portability.settings import Settings

Register = Callable[..., RegisteredApp]


def app_payloads(engine: Engine, app_id: str) -> list[dict[str, object]]:
    query = (
        select(OutboxEvent)
        .where(col(OutboxEvent.kind) == "app")
        .where(col(OutboxEvent.key) == app_id)
        .order_by(col(OutboxEvent.id))
    )
    with Session(engine) as session:
        return [json.loads(event.payload) for event in session.exec(query)]


def test_registration_is_pending_and_shows_credentials_once(
    client: TestClient, engine: Engine
) -> None:
    response = client.post("/v1/apps", json=registration())
    assert response.status_code == 201
    body = response.json()
    assert body["api_key"].startswith("pk_")
    assert body["signing_secret"].startswith("whsec_")
    assert body["app"]["review_status"] == "pending"
    assert body["app"]["approved_scopes"] == []
    app_id = body["app"]["app_id"]
    shown = client.get(f"/v1/apps/{app_id}", headers={"Authorization": f"Bearer {body['api_key']}"})
    assert shown.status_code == 200
    assert "api_key" not in shown.json()
    assert "signing_secret" not in shown.json()
    stored = ConsentService(engine).get_app(app_id)
    assert body["api_key"] not in repr(stored)
    # A pending app is published disabled: nothing may flow to it.
    assert app_payloads(engine, app_id)[-1]["enabled"] is False


def test_grant_needs_an_approved_app_within_its_scopes(
    client: TestClient, register: Register
) -> None:
    pending = register(["post", "profile"], approve=False)
    refused = client.post("/v1/consents", headers=PLATFORM, json=grant_body(pending.app_id))
    assert refused.status_code == 409
    assert "not approved" in refused.json()["message"]

    review = client.post(
        f"/v1/apps/{pending.app_id}/review",
        headers=OPERATOR,
        json={"decision": "approve", "approved_scopes": ["post"]},
    )
    assert review.json()["approved_scopes"] == ["post"]
    outside = client.post(
        "/v1/consents",
        headers=PLATFORM,
        json=grant_body(pending.app_id, categories=["post", "profile"]),
    )
    assert outside.status_code == 409
    assert outside.json()["error"] == "conflict"
    assert "profile" in outside.json()["message"]
    everything = client.post(
        "/v1/consents", headers=PLATFORM, json=grant_body(pending.app_id, categories="all")
    )
    assert everything.status_code == 409
    granted = client.post("/v1/consents", headers=PLATFORM, json=grant_body(pending.app_id))
    assert granted.status_code == 201
    assert granted.json()["categories"] == ["post"]


def test_approval_cannot_exceed_the_requested_scopes(
    client: TestClient, register: Register
) -> None:
    app = register(["post"], approve=False)
    response = client.post(
        f"/v1/apps/{app.app_id}/review",
        headers=OPERATOR,
        json={"decision": "approve", "approved_scopes": ["direct_message"]},
    )
    assert response.status_code == 422
    assert "not requested" in response.json()["message"]


def test_rejection_needs_a_reason_and_ends_consents(client: TestClient, register: Register) -> None:
    app = register()
    consent = client.post("/v1/consents", headers=PLATFORM, json=grant_body(app.app_id)).json()
    no_reason = client.post(
        f"/v1/apps/{app.app_id}/review", headers=OPERATOR, json={"decision": "reject"}
    )
    assert no_reason.status_code == 422
    rejected = client.post(
        f"/v1/apps/{app.app_id}/review",
        headers=OPERATOR,
        json={"decision": "reject", "reason": "Use case does not need posts."},
    )
    assert rejected.json()["review_status"] == "rejected"
    assert rejected.json()["review_reason"] == "Use case does not need posts."
    ended = client.get(f"/v1/consents/{consent['consent_id']}", headers=PLATFORM).json()
    assert (ended["status"], ended["removal_reason"]) == ("revoked", "policy")


@pytest.mark.parametrize("region", ["US", "CH", "BR", "us"])
def test_users_outside_the_eea_and_uk_are_refused(
    client: TestClient, register: Register, region: str
) -> None:
    app = register()
    response = client.post(
        "/v1/consents", headers=PLATFORM, json=grant_body(app.app_id, user_region=region)
    )
    assert response.status_code == 403
    assert response.json()["error"] == "region_not_served"
    assert "EEA" in response.json()["message"]
    listed = client.get("/v1/consents", headers=OPERATOR, params={"user_id": "u00000042"})
    assert listed.json()["consents"] == []


@pytest.mark.parametrize("region", ["GB", "de", "NO", "IS", "LI"])
def test_users_in_the_eea_and_uk_may_grant(
    client: TestClient, register: Register, region: str
) -> None:
    app = register()
    response = client.post(
        "/v1/consents", headers=PLATFORM, json=grant_body(app.app_id, user_region=region)
    )
    assert response.status_code == 201
    assert response.json()["user_region"] == region.upper()


def test_served_regions_are_eu_eea_and_uk() -> None:
    assert len(SERVED_REGIONS) == 27 + 3 + 1
    assert {"GB", "NO", "IS", "LI", "DE", "FR"} <= SERVED_REGIONS
    assert not {"CH", "US", "UK"} & SERVED_REGIONS


def test_revoke_reason_follows_the_caller(client: TestClient, register: Register) -> None:
    app = register()
    first = client.post("/v1/consents", headers=PLATFORM, json=grant_body(app.app_id)).json()
    other_user = grant_body(app.app_id, user_id="u00000043")
    second = client.post("/v1/consents", headers=PLATFORM, json=other_user).json()
    by_user = client.post(f"/v1/consents/{first['consent_id']}/revoke", headers=PLATFORM)
    by_app = client.post(f"/v1/consents/{second['consent_id']}/revoke", headers=app.headers)
    assert (by_user.json()["status"], by_user.json()["removal_reason"]) == (
        "revoked",
        "user_revoked",
    )
    assert by_app.json()["removal_reason"] == "app_revoked"
    again = client.post(f"/v1/consents/{first['consent_id']}/revoke", headers=app.headers)
    assert again.json()["removal_reason"] == "user_revoked"  # idempotent: unchanged


def test_account_deletion_ends_every_consent_of_the_user(
    client: TestClient, register: Register
) -> None:
    first, second = register(name="First"), register(name="Second")
    for app, user in ((first, "u1"), (second, "u1"), (first, "u2")):
        client.post("/v1/consents", headers=PLATFORM, json=grant_body(app.app_id, user_id=user))

    deleted = client.post("/v1/users/u1/account-deleted", headers=PLATFORM)
    again = client.post("/v1/users/u1/account-deleted", headers=PLATFORM)

    assert deleted.status_code == 200
    ended = deleted.json()["consents"]
    assert {(c["app_id"], c["status"], c["removal_reason"]) for c in ended} == {
        (first.app_id, "revoked", "account_deleted"),
        (second.app_id, "revoked", "account_deleted"),
    }
    assert again.json() == {"consents": []}  # nothing more to end
    other_user = client.get("/v1/consents", headers=PLATFORM, params={"user_id": "u2"}).json()
    assert [c["status"] for c in other_user["consents"]] == ["active"]


def test_list_filters_and_app_sees_only_its_own(client: TestClient, register: Register) -> None:
    mine, theirs = register(name="Mine"), register(name="Theirs")
    for app, user in ((mine, "u1"), (mine, "u2"), (theirs, "u1")):
        client.post("/v1/consents", headers=PLATFORM, json=grant_body(app.app_id, user_id=user))
    everything = client.get("/v1/consents", headers=OPERATOR).json()["consents"]
    assert len(everything) == 3
    user1 = client.get("/v1/consents", headers=PLATFORM, params={"user_id": "u1"}).json()
    assert {c["app_id"] for c in user1["consents"]} == {mine.app_id, theirs.app_id}
    own = client.get("/v1/consents", headers=mine.headers).json()["consents"]
    assert {c["app_id"] for c in own} == {mine.app_id}
    assert len(own) == 2
    other = client.get("/v1/consents", headers=mine.headers, params={"app_id": theirs.app_id})
    assert other.json()["consents"] == []
    active = client.get("/v1/consents", headers=OPERATOR, params={"status": "revoked"})
    assert active.json()["consents"] == []
    bad = client.get("/v1/consents", headers=OPERATOR, params={"status": "paused"})
    assert bad.status_code == 422


def test_expiry_must_be_future_and_aware(client: TestClient, register: Register) -> None:
    app = register()
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    naive = "2030-01-01T00:00:00"
    for expires_at in (past, naive):
        response = client.post(
            "/v1/consents", headers=PLATFORM, json=grant_body(app.app_id, expires_at=expires_at)
        )
        assert response.status_code == 422, expires_at
        assert response.json()["error"] == "invalid_request"


def test_status_without_a_delivery_reader_reports_nulls(
    client: TestClient, register: Register
) -> None:
    app = register()
    consent = client.post("/v1/consents", headers=PLATFORM, json=grant_body(app.app_id)).json()
    status = client.get(f"/v1/consents/{consent['consent_id']}/status", headers=app.headers)
    assert status.status_code == 200
    assert status.json() == {
        "consent_id": consent["consent_id"],
        "state": "active",
        "removal_reason": None,
        "categories": ["post"],
        "mode": "ongoing",
        "delivery_status_available": False,
        "last_delivered_at": None,
        "last_sequence": None,
        "failing": None,
        "failure_reason": None,
        "last_http_status": None,
        "last_response": None,
        "endpoint_disabled": None,
        "snapshot_epoch": 1,  # an ongoing grant asks for its snapshot by default
        "snapshot_delivered": None,  # unknown without delivery status
    }


def test_status_reports_the_latest_delivery_state(
    client: TestClient, register: Register, board: DeliveryStatusBoard
) -> None:
    app = register()
    consent = client.post("/v1/consents", headers=PLATFORM, json=grant_body(app.app_id)).json()
    cid = consent["consent_id"]
    board.available = True
    nothing_yet = client.get(f"/v1/consents/{cid}/status", headers=app.headers).json()
    assert (nothing_yet["last_sequence"], nothing_yet["snapshot_delivered"]) == (0, False)
    delivered = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    later = delivered + timedelta(seconds=5)
    board.apply(
        cid,
        {
            "consent_id": cid,
            "app_id": app.app_id,
            "last_sequence": 17,
            "last_delivered_at": delivered,
            "failing": True,
            "last_error": "HTTP 503",
            "last_status": 503,
            "updated_at": later,
            "snapshot_epoch_delivered": 1,
        },
    )
    body = client.get(f"/v1/consents/{cid}/status", headers=app.headers).json()
    assert (body["snapshot_epoch"], body["snapshot_delivered"]) == (1, True)
    assert body["last_sequence"] == 17
    assert body["failing"] is True
    assert body["failure_reason"] == "HTTP 503"
    assert body["last_http_status"] == 503
    assert datetime.fromisoformat(body["last_delivered_at"]) == delivered


def test_app_sets_a_new_webhook_url_and_a_bad_one_is_explained(
    client: TestClient, register: Register
) -> None:
    app = register()
    url = f"/v1/apps/{app.app_id}/webhook"

    moved = client.put(url, headers=app.headers, json={"webhook_url": "https://new.example/h"})
    bad = client.put(url, headers=app.headers, json={"webhook_url": "ftp://new.example/h"})

    assert moved.status_code == 200
    assert moved.json()["webhook_url"] == "https://new.example/h"
    assert client.get(f"/v1/apps/{app.app_id}", headers=app.headers).json()["webhook_url"] == (
        "https://new.example/h"
    )
    assert bad.status_code == 422
    assert "http(s) URL" in bad.json()["message"]


def test_secret_rotation_publishes_both_secrets_during_the_overlap(
    client: TestClient, register: Register, engine: Engine, api_settings: Settings
) -> None:
    app = register()
    keys = SecretsKeys.from_settings(api_settings)

    def published() -> list[str]:
        """The latest app record's secrets, opened: the outbox carries them sealed only."""
        record = app_payloads(engine, app.app_id)[-1]
        assert record["signing_secrets"] == []
        sealed = record["sealed_signing_secrets"]
        assert isinstance(sealed, list)
        return [keys.open(value, app.app_id) for value in sealed]

    rotated = client.post(f"/v1/apps/{app.app_id}/secret/rotate", headers=app.headers)
    assert rotated.status_code == 200
    new_secret = rotated.json()["signing_secret"]
    assert new_secret.startswith("whsec_")
    assert new_secret != app.signing_secret
    expiry = datetime.fromisoformat(rotated.json()["previous_secret_expires_at"])
    assert published() == [new_secret, app.signing_secret]
    service = ConsentService(engine, secrets=keys)
    assert service.end_secret_overlaps(now=expiry - timedelta(seconds=1)) == []
    [ended] = service.end_secret_overlaps(now=expiry)
    assert ended.signing_secrets == [new_secret]
    assert published() == [new_secret]
    shown = client.get(f"/v1/apps/{app.app_id}", headers=app.headers).json()
    assert shown["previous_secret_expires_at"] is None


def test_rotation_without_overlap_drops_the_old_secret(engine: Engine) -> None:
    service = ConsentService(engine)
    app = service.register_app("R", "https://r.example/h")
    rotated, rotation = service.rotate_secret(app.app_id, overlap_s=0)
    assert rotated.signing_secrets == [rotation.secret]
    assert rotation.secret != app.signing_secret


def test_disabling_an_app_ends_its_consents(engine: Engine) -> None:
    service = ConsentService(engine)
    app = service.register_app("R", "https://r.example/h")
    consent = service.grant("u1", app.app_id, ["post"], user_region="FR")
    disabled = service.set_app_enabled(app.app_id, False)
    assert disabled.to_record()["enabled"] is False
    ended = service.get_consent(consent.consent_id)
    assert (ended.status, ended.removal_reason) == ("revoked", "app_disabled")
    assert ended.to_record()["removal_reason"] == "app_disabled"


def test_expiry_sets_the_removal_reason(engine: Engine) -> None:
    service = ConsentService(engine)
    app = service.register_app("R", "https://r.example/h")
    now = datetime(2030, 1, 1, tzinfo=UTC)
    consent = service.grant(
        "u1", app.app_id, ["post"], expires_at=now + timedelta(hours=1), now=now
    )
    [expired] = service.expire_due(now=now + timedelta(hours=2))
    assert expired.consent_id == consent.consent_id
    assert (expired.status, expired.removal_reason) == ("expired", "expired")


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/apps", {"name": "x"}, 422),
        ("POST", "/v1/apps", {**registration(), "webhook_url": "ftp://x"}, 422),
        ("POST", "/v1/apps", {**registration(), "requested_scopes": ["photos"]}, 422),
        ("POST", "/v1/apps", {**registration(), "name": "a\x00b"}, 422),
        ("POST", "/v1/apps", {**registration(), "extra": 1}, 422),
        ("POST", "/v1/consents", {"user_id": "u"}, 422),
        ("POST", "/v1/consents", [], 422),
        ("GET", "/v1/consents/bad%00id", None, 422),
        ("GET", "/v1/consents/cns_missing", None, 404),
        ("GET", "/v1/apps/app_missing", None, 404),
        ("POST", "/v1/apps/app_missing/review", {"decision": "approve"}, 404),
        ("DELETE", "/v1/apps/app_missing", None, 405),
        ("GET", "/v1/nothing", None, 404),
    ],
)
def test_errors_are_json_that_says_what_to_fix(
    client: TestClient,
    method: str,
    path: str,
    body: object,
    status: int,
) -> None:
    response = client.request(method, path, json=body, headers=OPERATOR)
    assert response.status_code == status, response.text
    error = response.json()
    assert set(error) == {"error", "message"}
    assert error["message"]


def test_malformed_json_is_a_422(client: TestClient) -> None:
    response = client.post(
        "/v1/consents",
        headers={**PLATFORM, "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_request"


def test_openapi_and_docs_are_served(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert "/v1/consents/{consent_id}/status" in document["paths"]
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert client.get("/docs").status_code == 200
