"""One-time transfers through the API: each state, expiry, cancel, and who may download.

The archive builder is stood in for by the store's own calls (claim, write a file, mark
ready), which is exactly what the builder does around the archive; the builder itself is
tested with the current-state view in tests/transfers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from api.api_helpers import OPERATOR, PLATFORM, RegisteredApp, TestClient, grant_body
from portability.consent.models import OutboxEvent
from portability.consent.transfer_requests import (
    ArchiveFacts,
    SnapshotFacts,
    TransferStore,
    delete_archive,
    download_url,
)
from portability.settings import Settings

Register = Callable[..., RegisteredApp]


@pytest.fixture
def owner(register: Register) -> RegisteredApp:
    return register(name="Owner")


def one_time_consent(client: TestClient, app: RegisteredApp) -> str:
    body = grant_body(app.app_id, mode="one_time", categories=["post", "profile"])
    response = client.post("/v1/consents", headers=PLATFORM, json=body)
    assert response.status_code == 201, response.text
    consent_id: str = response.json()["consent_id"]
    return consent_id


def build(engine: Engine, settings: Settings, transfer_id: str, content: bytes = b"zip") -> None:
    """What a builder does: claim, write the archive, mark it ready."""
    store = TransferStore(engine, expiry_s=settings.transfer_expiry_s)
    [claimed] = store.claim()
    assert claimed.transfer_id == transfer_id
    settings.archive_dir().mkdir(parents=True, exist_ok=True)
    (settings.archive_dir() / f"{transfer_id}.zip").write_bytes(content)
    facts = ArchiveFacts(
        archive_file=f"{transfer_id}.zip",
        size_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        record_count=3,
        policy_version="2026-11-01",
        position="2:17",
    )
    store.mark_ready(transfer_id, facts, settings.public_api_url())


def ready_transfer(
    client: TestClient, engine: Engine, settings: Settings, owner: RegisteredApp
) -> str:
    """A one-time consent of ``owner`` whose transfer is built and ready."""
    consent_id = one_time_consent(client, owner)
    response = client.post(f"/v1/consents/{consent_id}/transfers", headers=owner.headers)
    transfer_id: str = response.json()["transfer_id"]
    build(engine, settings, transfer_id)
    return transfer_id


def test_transfer_goes_pending_in_progress_ready_and_downloads(
    client: TestClient, engine: Engine, api_settings: Settings, owner: RegisteredApp
) -> None:
    consent_id = one_time_consent(client, owner)

    requested = client.post(f"/v1/consents/{consent_id}/transfers", headers=owner.headers)

    assert requested.status_code == 202, requested.text
    transfer = requested.json()
    transfer_id = transfer["transfer_id"]
    assert requested.headers["Location"] == f"/v1/transfers/{transfer_id}"
    assert (transfer["state"], transfer["download_url"]) == ("pending", None)
    assert transfer["categories"] == ["profile", "post"]
    early = client.get(f"/v1/transfers/{transfer_id}/archive", headers=owner.headers)
    assert (early.status_code, early.json()["error"]) == (409, "not_ready")

    build(engine, api_settings, transfer_id, b"PK archive bytes")

    ready = client.get(f"/v1/transfers/{transfer_id}", headers=owner.headers).json()
    assert ready["state"] == "ready"
    assert ready["download_url"] == download_url(api_settings.public_api_url(), transfer_id)
    assert ready["sha256"] == hashlib.sha256(b"PK archive bytes").hexdigest()
    expires = datetime.fromisoformat(ready["expires_at"]) - datetime.fromisoformat(
        ready["ready_at"]
    )
    assert expires == timedelta(days=4)
    download = client.get(f"/v1/transfers/{transfer_id}/archive", headers=owner.headers)
    assert download.status_code == 200
    assert download.content == b"PK archive bytes"
    assert download.headers["content-type"] == "application/zip"
    listed = client.get(f"/v1/consents/{consent_id}/transfers", headers=owner.headers).json()
    assert [t["transfer_id"] for t in listed["transfers"]] == [transfer_id]


def test_ready_writes_the_download_ready_event_to_the_outbox(
    client: TestClient, engine: Engine, api_settings: Settings, owner: RegisteredApp
) -> None:
    consent_id = one_time_consent(client, owner)
    transfer_id = client.post(f"/v1/consents/{consent_id}/transfers", headers=owner.headers).json()[
        "transfer_id"
    ]

    build(engine, api_settings, transfer_id, b"abc")

    with Session(engine) as session:
        query = (
            select(OutboxEvent)
            .where(col(OutboxEvent.kind) == "notification")
            .order_by(col(OutboxEvent.id))
        )
        event, removed = session.exec(query).all()
    payload = json.loads(event.payload)
    assert event.key == consent_id
    assert payload["event_type"] == "portability.download.ready"
    # Then the one-time consent is used up, and the app told after the download event.
    assert (removed.key, json.loads(removed.payload)["attributes"]) == (
        consent_id,
        {"reason": "completed"},
    )
    assert payload["attributes"]["transfer_id"] == transfer_id
    assert payload["attributes"]["download_url"].endswith(f"/v1/transfers/{transfer_id}/archive")
    assert payload["attributes"]["size_bytes"] == "3"
    assert payload["attributes"]["categories"] == "profile,post"


@pytest.mark.parametrize(
    ("caller", "status"),
    [("own", 200), ("other", 404), ("platform", 403), ("operator", 403), ("none", 401)],
)
def test_only_the_apps_own_key_downloads(
    client: TestClient,
    engine: Engine,
    api_settings: Settings,
    owner: RegisteredApp,
    register: Register,
    caller: str,
    status: int,
) -> None:
    transfer_id = ready_transfer(client, engine, api_settings, owner)
    headers = {
        "own": owner.headers,
        "other": register(name="Intruder").headers,
        "platform": PLATFORM,
        "operator": OPERATOR,
        "none": {},
    }[caller]

    response = client.get(f"/v1/transfers/{transfer_id}/archive", headers=headers)

    assert response.status_code == status
    if status != 200:
        assert set(response.json()) == {"error", "message"}


def test_expired_archive_is_gone_and_its_file_deleted(
    client: TestClient, engine: Engine, api_settings: Settings, owner: RegisteredApp
) -> None:
    transfer_id = ready_transfer(client, engine, api_settings, owner)
    store = TransferStore(engine)

    [expired] = store.expire_due(datetime.now(UTC) + timedelta(days=4, seconds=1))
    delete_archive(api_settings, expired)

    assert expired.state == "expired"
    assert not (api_settings.archive_dir() / f"{transfer_id}.zip").exists()
    gone = client.get(f"/v1/transfers/{transfer_id}/archive", headers=owner.headers)
    assert (gone.status_code, gone.json()["error"]) == (410, "gone")
    assert store.expire_due(datetime.now(UTC) + timedelta(days=5)) == []


def test_cancel_deletes_a_ready_archive_and_cannot_be_repeated(
    client: TestClient, engine: Engine, api_settings: Settings, owner: RegisteredApp
) -> None:
    transfer_id = ready_transfer(client, engine, api_settings, owner)

    cancelled = client.post(f"/v1/transfers/{transfer_id}/cancel", headers=owner.headers)
    again = client.post(f"/v1/transfers/{transfer_id}/cancel", headers=owner.headers)

    assert cancelled.json()["state"] == "cancelled"
    assert not (api_settings.archive_dir() / f"{transfer_id}.zip").exists()
    assert again.status_code == 409
    gone = client.get(f"/v1/transfers/{transfer_id}/archive", headers=owner.headers)
    assert gone.status_code == 410


def test_failed_transfer_says_why_and_a_new_one_may_follow(
    client: TestClient, engine: Engine, owner: RegisteredApp
) -> None:
    consent_id = one_time_consent(client, owner)
    url = f"/v1/consents/{consent_id}/transfers"
    transfer_id = client.post(url, headers=owner.headers).json()["transfer_id"]
    second = client.post(url, headers=owner.headers)
    assert second.status_code == 409  # one at a time
    assert transfer_id in second.json()["message"]
    store = TransferStore(engine)
    store.claim()

    store.fail(transfer_id, "the current-state view is not available")

    failed = client.get(f"/v1/transfers/{transfer_id}", headers=owner.headers).json()
    assert (failed["state"], failed["failure_reason"]) == (
        "failed",
        "the current-state view is not available",
    )
    assert client.post(url, headers=owner.headers).status_code == 202


def test_ongoing_and_revoked_consents_get_no_transfer(
    client: TestClient, owner: RegisteredApp
) -> None:
    ongoing = client.post("/v1/consents", headers=PLATFORM, json=grant_body(owner.app_id))
    ongoing_id = ongoing.json()["consent_id"]
    revoked_id = one_time_consent(client, owner)
    client.post(f"/v1/consents/{revoked_id}/revoke", headers=PLATFORM)

    for consent_id, why in ((ongoing_id, "ongoing"), (revoked_id, "revoked")):
        response = client.post(f"/v1/consents/{consent_id}/transfers", headers=owner.headers)
        assert response.status_code == 409
        assert why in response.json()["message"]


def test_requests_from_others_are_refused_as_the_conventions_say(
    client: TestClient, owner: RegisteredApp, register: Register
) -> None:
    consent_id = one_time_consent(client, owner)
    url = f"/v1/consents/{consent_id}/transfers"

    assert client.post(url, headers=register(name="Other").headers).status_code == 404
    assert client.post(url, headers=PLATFORM).status_code == 403
    assert client.post(url).status_code == 401
    by_operator = client.post(url, headers=OPERATOR)
    assert by_operator.status_code == 202
    transfer_id = by_operator.json()["transfer_id"]
    other = register(name="Another").headers
    assert client.get(f"/v1/transfers/{transfer_id}", headers=other).status_code == 404
    assert client.post(f"/v1/transfers/{transfer_id}/cancel", headers=other).status_code == 404
    assert client.get(f"/v1/transfers/{transfer_id}", headers=PLATFORM).status_code == 200


def test_archive_file_missing_is_gone(
    client: TestClient, engine: Engine, api_settings: Settings, owner: RegisteredApp
) -> None:
    transfer_id = ready_transfer(client, engine, api_settings, owner)
    Path(api_settings.archive_dir() / f"{transfer_id}.zip").unlink()

    response = client.get(f"/v1/transfers/{transfer_id}/archive", headers=owner.headers)

    assert response.status_code == 410


# --- snapshots of ongoing consents ------------------------------------------------------------


def ongoing_consent(client: TestClient, app: RegisteredApp, **extra: object) -> dict[str, object]:
    body = grant_body(app.app_id, mode="ongoing", categories=["post", "profile"]) | extra
    response = client.post("/v1/consents", headers=PLATFORM, json=body)
    assert response.status_code == 201, response.text
    consent: dict[str, object] = response.json()
    return consent


def test_a_resync_asked_again_before_its_snapshot_is_built_is_that_snapshot(
    client: TestClient, owner: RegisteredApp
) -> None:
    # An app retrying its resync (or asking twice) must not cancel the pending snapshot for a
    # new epoch: deltas matched in between are stamped with the pending one's epoch and wait
    # for its pages, which would never come, with the new snapshot's pages sorted in behind
    # them: the consent would get nothing more.
    consent = ongoing_consent(client, owner)  # its initial snapshot (epoch 1) is pending
    consent_id = consent["consent_id"]
    listed = client.get(f"/v1/consents/{consent_id}/transfers", headers=owner.headers)
    (initial,) = listed.json()["transfers"]

    answers = [
        client.post(f"/v1/consents/{consent_id}/snapshots", headers=owner.headers) for _ in range(3)
    ]

    assert [answer.status_code for answer in answers] == [202, 202, 202]
    assert {answer.json()["transfer_id"] for answer in answers} == {initial["transfer_id"]}
    assert {answer.json()["snapshot_epoch"] for answer in answers} == {1}
    after = client.get(f"/v1/consents/{consent_id}", headers=owner.headers).json()
    assert after["snapshot_epoch"] == 1
    listed = client.get(f"/v1/consents/{consent_id}/transfers", headers=owner.headers)
    assert [(t["snapshot_epoch"], t["state"]) for t in listed.json()["transfers"]] == [
        (1, "pending")
    ]


def test_a_snapshot_that_failed_after_a_newer_resync_is_still_built_first(
    client: TestClient, engine: Engine, owner: RegisteredApp
) -> None:
    # The deltas stamped with its epoch wait for its pages: cancelling it as superseded would
    # hold them (and the newer snapshot's pages behind them) for good.
    consent_id = ongoing_consent(client, owner)["consent_id"]
    store = TransferStore(engine)
    (first,) = store.claim()  # epoch 1 being built
    resync = client.post(f"/v1/consents/{consent_id}/snapshots", headers=owner.headers)
    assert (resync.status_code, resync.json()["snapshot_epoch"]) == (202, 2)

    store.retry_later(first.transfer_id, "the view was not ready")
    claimed = store.claim()

    assert [(t.snapshot_epoch, t.state) for t in claimed] == [
        (1, "in_progress"),
        (2, "in_progress"),
    ]


def test_an_ongoing_grant_asks_for_its_initial_snapshot_unless_declined(
    client: TestClient, owner: RegisteredApp
) -> None:
    with_snapshot = ongoing_consent(client, owner)
    # Another user: the first user's identical consent is active (a second is refused).
    declined = ongoing_consent(client, owner, initial_snapshot=False, user_id="u00000043")

    assert (with_snapshot["snapshot_epoch"], declined["snapshot_epoch"]) == (1, 0)
    listed = client.get(
        f"/v1/consents/{with_snapshot['consent_id']}/transfers", headers=owner.headers
    ).json()["transfers"]
    assert [(t["kind"], t["snapshot_epoch"], t["state"]) for t in listed] == [
        ("snapshot", 1, "pending")
    ]
    none = client.get(f"/v1/consents/{declined['consent_id']}/transfers", headers=owner.headers)
    assert none.json()["transfers"] == []
    one_time = grant_body(owner.app_id, mode="one_time", categories=["post"])
    refused = client.post(
        "/v1/consents", headers=PLATFORM, json=one_time | {"initial_snapshot": True}
    )
    assert refused.status_code in (400, 422)
    assert "one-time" in refused.text


def test_a_resync_starts_a_new_snapshot_epoch(
    client: TestClient, engine: Engine, owner: RegisteredApp, register: Register
) -> None:
    consent = ongoing_consent(client, owner)
    consent_id = consent["consent_id"]
    # The initial snapshot is built (claimed and published by a builder).
    store = TransferStore(engine)
    (initial,) = store.claim()
    store.mark_snapshot_published(
        initial.transfer_id,
        SnapshotFacts(
            position=5, partition=0, last_page_offset=9, record_count=3, pages=1,
            policy_version="v1",
        ),
    )  # fmt: skip

    resync = client.post(f"/v1/consents/{consent_id}/snapshots", headers=owner.headers)

    assert resync.status_code == 202, resync.text
    transfer = resync.json()
    assert (transfer["kind"], transfer["snapshot_epoch"], transfer["state"]) == (
        "snapshot",
        2,
        "pending",
    )
    assert resync.headers["Location"] == f"/v1/transfers/{transfer['transfer_id']}"
    after = client.get(f"/v1/consents/{consent_id}", headers=owner.headers).json()
    assert after["snapshot_epoch"] == 2
    states = {
        t["snapshot_epoch"]: t["state"]
        for t in client.get(f"/v1/consents/{consent_id}/transfers", headers=owner.headers).json()[
            "transfers"
        ]
    }
    assert states == {1: "ready", 2: "pending"}
    # A snapshot has nothing to download and cannot be cancelled (the deltas wait for it).
    download = client.get(f"/v1/transfers/{transfer['transfer_id']}/archive", headers=owner.headers)
    assert (download.status_code, download.json()["error"]) == (409, "snapshot")
    cancel = client.post(f"/v1/transfers/{transfer['transfer_id']}/cancel", headers=owner.headers)
    assert (cancel.status_code, cancel.json()["error"]) == (409, "snapshot")
    # Only the consent's own app or an operator asks; another app does not see the consent.
    other = register(name="Other")
    hidden = client.post(f"/v1/consents/{consent_id}/snapshots", headers=other.headers)
    assert hidden.status_code == 404
    assert client.post(f"/v1/consents/{consent_id}/snapshots", headers=PLATFORM).status_code == 403
    by_operator = client.post(f"/v1/consents/{consent_id}/snapshots", headers=OPERATOR)
    # Epoch 2's snapshot is still pending: the operator's resync is that one.
    assert (by_operator.status_code, by_operator.json()["transfer_id"]) == (
        202,
        transfer["transfer_id"],
    )


def test_a_snapshot_is_only_for_an_active_ongoing_consent(
    client: TestClient, owner: RegisteredApp
) -> None:
    one_time = one_time_consent(client, owner)
    refused = client.post(f"/v1/consents/{one_time}/snapshots", headers=owner.headers)
    assert refused.status_code == 409
    assert "ongoing" in refused.json()["message"]
    ongoing = ongoing_consent(client, owner)["consent_id"]
    client.post(f"/v1/consents/{ongoing}/revoke", headers=owner.headers)
    ended = client.post(f"/v1/consents/{ongoing}/snapshots", headers=owner.headers)
    assert ended.status_code == 409
    assert "revoked" in ended.json()["message"]
