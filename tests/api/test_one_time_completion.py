"""A one-time consent is used up by its archive; an identical grant is refused, naming one.

Through the API on SQLite and PostgreSQL (the archive builder stood in for by the store's
own calls, as in test_transfers; the builder itself: tests/transfers/test_one_time_lifecycle):

- once the archive is ready the consent reads expired / completed, another transfer is
  refused with 409 saying where the archive is, and the download keeps working;
- a failed or cancelled transfer does not use the consent up;
- a consent revoked while its archive is built gets no archive;
- a second identical grant is 409 ``consent_exists`` with the active consent's Location.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from sqlalchemy.engine import Engine

from api.api_helpers import PLATFORM, RegisteredApp, TestClient, grant_body
from portability.consent.transfer_requests import ArchiveFacts, TransferStore
from portability.settings import Settings

Register = Callable[..., RegisteredApp]
CONTENT = b"PK the user's archive"


@pytest.fixture
def owner(register: Register) -> RegisteredApp:
    return register(name="Owner")


def one_time(client: TestClient, app: RegisteredApp, user_id: str = "u00000042") -> str:
    body = grant_body(app.app_id, mode="one_time", categories=["post"], user_id=user_id)
    response = client.post("/v1/consents", headers=PLATFORM, json=body)
    assert response.status_code == 201, response.text
    consent_id: str = response.json()["consent_id"]
    return consent_id


def request(client: TestClient, app: RegisteredApp, consent_id: str) -> str:
    response = client.post(f"/v1/consents/{consent_id}/transfers", headers=app.headers)
    assert response.status_code == 202, response.text
    transfer_id: str = response.json()["transfer_id"]
    return transfer_id


def write_and_mark_ready(engine: Engine, settings: Settings, transfer_id: str) -> str:
    """What a builder does after claiming: write the archive, mark it ready; its state."""
    settings.archive_dir().mkdir(parents=True, exist_ok=True)
    (settings.archive_dir() / f"{transfer_id}.zip").write_bytes(CONTENT)
    facts = ArchiveFacts(
        archive_file=f"{transfer_id}.zip",
        size_bytes=len(CONTENT),
        sha256=hashlib.sha256(CONTENT).hexdigest(),
        record_count=1,
        policy_version="2026-11-01",
        position="0:1",
    )
    store = TransferStore(engine, expiry_s=settings.transfer_expiry_s)
    return store.mark_ready(transfer_id, facts, settings.public_api_url()).state


def test_the_archive_uses_the_consent_up_and_stays_downloadable(
    client: TestClient, engine: Engine, api_settings: Settings, owner: RegisteredApp
) -> None:
    consent_id = one_time(client, owner)
    transfer_id = request(client, owner, consent_id)
    [claimed] = TransferStore(engine).claim()
    assert claimed.transfer_id == transfer_id

    assert write_and_mark_ready(engine, api_settings, transfer_id) == "ready"

    consent = client.get(f"/v1/consents/{consent_id}", headers=owner.headers).json()
    assert (consent["status"], consent["removal_reason"]) == ("expired", "completed")
    assert consent["revoked_at"] is None  # it ended by itself; nobody revoked it
    again = client.post(f"/v1/consents/{consent_id}/transfers", headers=owner.headers)
    assert again.status_code == 409
    message = again.json()["message"]
    assert "used up" in message
    assert f"GET /v1/transfers/{transfer_id}/archive" in message
    assert "new consent" in message
    download = client.get(f"/v1/transfers/{transfer_id}/archive", headers=owner.headers)
    assert (download.status_code, download.content) == (200, CONTENT)
    revoked = client.post(f"/v1/consents/{consent_id}/revoke", headers=PLATFORM)
    assert revoked.json()["removal_reason"] == "completed"  # already ended: unchanged


def test_a_failed_or_cancelled_transfer_leaves_the_consent_to_ask_again(
    client: TestClient, engine: Engine, api_settings: Settings, owner: RegisteredApp
) -> None:
    consent_id = one_time(client, owner)
    store = TransferStore(engine)
    failed = request(client, owner, consent_id)
    store.claim()
    store.fail(failed, "the current-state view is not available")
    cancelled = request(client, owner, consent_id)
    assert client.post(f"/v1/transfers/{cancelled}/cancel", headers=owner.headers).is_success

    retried = request(client, owner, consent_id)
    [claimed] = store.claim()

    assert claimed.transfer_id == retried
    assert write_and_mark_ready(engine, api_settings, retried) == "ready"
    consent = client.get(f"/v1/consents/{consent_id}", headers=owner.headers).json()
    assert consent["removal_reason"] == "completed"


def test_a_consent_revoked_before_its_archive_is_ready_gets_none(
    client: TestClient, engine: Engine, api_settings: Settings, owner: RegisteredApp
) -> None:
    store = TransferStore(engine)
    building = one_time(client, owner)
    in_progress = request(client, owner, building)
    store.claim()
    waiting = one_time(client, owner, user_id="u00000043")
    pending = request(client, owner, waiting)
    for consent_id in (building, waiting):
        assert client.post(f"/v1/consents/{consent_id}/revoke", headers=PLATFORM).is_success

    assert write_and_mark_ready(engine, api_settings, in_progress) == "cancelled"
    assert store.claim() == []  # the pending one is cancelled, not built

    for transfer_id in (in_progress, pending):
        transfer = client.get(f"/v1/transfers/{transfer_id}", headers=owner.headers).json()
        assert transfer["state"] == "cancelled"
        assert "consent ended" in transfer["failure_reason"]
    consent = client.get(f"/v1/consents/{building}", headers=owner.headers).json()
    assert consent["removal_reason"] == "user_revoked"  # not completed: nothing went out


def test_an_identical_grant_is_409_naming_the_active_consent(
    client: TestClient, owner: RegisteredApp
) -> None:
    body = grant_body(owner.app_id, categories=["post", "profile"])
    first = client.post("/v1/consents", headers=PLATFORM, json=body)
    assert first.status_code == 201, first.text
    consent_id = first.json()["consent_id"]

    second = client.post(
        "/v1/consents", headers=PLATFORM, json=body | {"categories": ["profile", "post"]}
    )

    assert second.status_code == 409
    assert second.json()["error"] == "consent_exists"
    assert consent_id in second.json()["message"]
    assert second.headers["Location"] == f"/v1/consents/{consent_id}"
    other_mode = client.post("/v1/consents", headers=PLATFORM, json=body | {"mode": "one_time"})
    assert other_mode.status_code == 201, other_mode.text
